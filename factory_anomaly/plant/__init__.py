"""The synthetic plant: a simulated factory with exact fault truth, and a live simulator streaming it."""
