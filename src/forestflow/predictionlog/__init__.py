"""predictionlog"""
