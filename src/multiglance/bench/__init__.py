"""The `bench` commands: drivers over the library that reproduce, measure and publish (docs/results/*.json).

    multiglance bench paper | beyond | megapixel | large | speed
"""
