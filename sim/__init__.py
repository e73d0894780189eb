"""The discrete-event simulator of asynchronous SGD (SimPy)."""
