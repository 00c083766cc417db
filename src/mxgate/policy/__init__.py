"""mxgate.policy"""
