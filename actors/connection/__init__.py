"""actors/connection"""
