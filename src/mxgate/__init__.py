"""mxgate: a mail security gateway and a locked-down mailbox server in one program.

The code reads in the order mail flows: listen (server/) → attribute (policy/) →
authenticate (auth/) → filter (filters/) → queue/deliver (queue/, delivery/) → trace (trace/).
"""

__version__ = "0.1.0"
