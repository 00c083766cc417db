"""mxgate.exo: read, audit and import an Exchange Online tenant's mail-flow configuration."""
