"""`make demo`: a compute node in a network namespace with the three daemons, three injected
failures, and the notifications as a real masakari-api stored them."""
