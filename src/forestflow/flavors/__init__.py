"""flavors"""
