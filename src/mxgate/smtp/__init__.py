"""mxgate.smtp"""
