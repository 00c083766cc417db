"""mxgate.filters"""
