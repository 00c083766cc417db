"""mxgate.delivery"""
