"""Build hook for the optional C accelerator; every other setting is in setup.cfg.

`optional=True`: where no C compiler is available the build only warns, and mdengine runs its pure-Python
book code instead (same results; see mdengine/book.py and the README's Dependencies section).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mdengine._speedups", ["mdengine/_speedups.c"], depends=["mdengine/_scan.h", "mdengine/_lane.h"],
                           optional=True)])
