"""Build hook for the optional C accelerator (sources in mdengine/_c/, module still `mdengine._speedups`);
every other setting is in setup.cfg.

`optional=True`: where no C compiler is available the build only warns, and mdengine runs its pure-Python
book code instead (same results; see mdengine/book.py and the README's Dependencies section).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mdengine._speedups", ["mdengine/_c/_speedups.c"],
                           depends=["mdengine/_c/_scan.h", "mdengine/_c/_lane.h"], optional=True)])
