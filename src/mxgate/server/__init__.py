"""mxgate.server"""
