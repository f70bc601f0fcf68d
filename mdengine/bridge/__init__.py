"""Books and trades over a message bus (NATS JetStream) to mirrors that keep the same reader API.

`publish` (publisher.py) reads a namespace's shared memory like any strategy and sends every book change and
trade; `mirror` (mirror.py) rebuilds them into local shared memory with the same layout, so an unchanged
`Client(namespace)` reads them. The bus sits behind `Transport` (transport.py); NATS is the one built.
"""
