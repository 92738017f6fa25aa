"""Traffic: what clients send and receive. The prediction log and its storage, feedback labels, and API keys.

It judges nothing: monitoring reads its windows, healing reads its labels, serving writes to it.
"""
