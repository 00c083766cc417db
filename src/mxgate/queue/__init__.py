"""mxgate.queue"""
