# Socket calls a real program makes, run inside a vdestack stack: TCP and UDP, both
# families, options, names, shutdown, non-blocking connect.
import socket, os, errno
def tcp(fam, host, port):
    l = socket.socket(fam, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port)); l.listen(8)
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.connect(l.getsockname()[:2])
    s, peer = l.accept()
    c.sendall(b"GET / HTTP/1.0\r\n\r\n"); s.recv(100)
    s.sendall(b"HTTP/1.0 200 OK\r\n\r\nhi"); s.shutdown(socket.SHUT_WR)
    c.recv(100); c.getpeername(); c.getsockname()
    c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR); c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    c.close(); s.close(); l.close()
def udp(fam, host):
    a = socket.socket(fam, socket.SOCK_DGRAM); a.bind((host, 0))
    b = socket.socket(fam, socket.SOCK_DGRAM); b.connect(a.getsockname()[:2])
    b.send(b"ping"); d, frm = a.recvfrom(100); a.sendto(b"pong", frm); b.recv(100)
    a.close(); b.close()
def nonblocking(host):
    c = socket.socket(); c.setblocking(False)
    try: c.connect((host, 9))
    except BlockingIOError: pass
    c.close()
tcp(socket.AF_INET, "10.0.0.1", 80)
tcp(socket.AF_INET6, "::1", 8080)
tcp(socket.AF_INET, "127.0.0.1", 0)
udp(socket.AF_INET, "10.0.0.1"); udp(socket.AF_INET6, "fc00::1")
nonblocking("10.0.0.2")
print("app done")
