"""The I/O shells that move one alert through tocsin: router, recorder, delivery,
control and the delivery-status answer. Each pulls, asks the core what to do, commits
through the store, publishes through the bus, and acks only after that."""
