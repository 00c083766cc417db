"""mxgate.trace"""
