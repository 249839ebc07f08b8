"""Talking to the hub: resolving and listing (`client`), error translation (`errors`), the file
listing's entries (`listing`), and our own transfer (`transfer`, `source`, `rangemap`, `chunks`,
`connections`).

Kept empty on purpose: a cached start imports nothing from here.
"""
