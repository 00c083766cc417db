"""mxgate.config"""
