"""mxgate.export"""
