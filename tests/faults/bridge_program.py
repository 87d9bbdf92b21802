"""A TAPI bridge program as its own process (so a test can kill -9 or SIGSTOP it): it
connects, sends its full state (the lines of argv[3:] in service, calls from stdin lines),
then relays every JSON line it reads on stdin, as the real bridge relays TAPI events."""

import json
import socket
import sys

host, port, lines = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
sock = socket.create_connection((host, port))
for line in lines:
    sock.sendall((json.dumps({"device": line, "devstate": "inservice"}) + "\n").encode())
print("connected", flush=True)
for raw in sys.stdin:
    sock.sendall(raw.encode())
    print("sent", flush=True)
