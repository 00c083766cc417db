"""mxgate.store"""
