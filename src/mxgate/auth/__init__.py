"""mxgate.auth"""
