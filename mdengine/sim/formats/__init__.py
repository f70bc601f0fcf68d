"""Pure wire renderers, one module per exchange: model state -> exact JSON, requests -> acks/errors."""
