"""hub: interoperability middleware between provincial one-stop systems and national e-government services."""

import warnings

__version__ = "0.1.0"

# pyHanko imports cryptography's DSA types to recognise such keys, and cryptography warns about DSA on that import:
# not something an operator can act on (hub never signs with DSA), so not printed at every start of `hub`.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"pyhanko\.")
