"""mxgate.probe"""
