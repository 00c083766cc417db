"""mxgate.admin"""
