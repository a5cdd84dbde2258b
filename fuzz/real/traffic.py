# Kernel traffic for real/frames.sh, on loopback in a network namespace of its own: a TCP
# exchange on each family (server on port 4000: a request, an answer in parts, both close),
# UDP datagrams to ports 53 and 5353 with no one listening (the kernel answers port
# unreachable).
import socket, threading
def tcp(fam, host):
    l = socket.socket(fam, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, 4000)); l.listen(1)
    def serve():
        s, _ = l.accept()
        s.recv(1000)
        for part in (b"HTTP/1.0 200 OK\r\n", b"Content-Length: 600\r\n\r\n", b"x" * 600):
            s.sendall(part)
        s.close()
    t = threading.Thread(target=serve); t.start()
    c = socket.create_connection((host, 4000))
    c.sendall(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
    while c.recv(4096):
        pass
    c.close(); t.join(); l.close()
def udp(fam, host, port):
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03lab\x00\x00\x01\x00\x01", (host, port))
    u.close()
tcp(socket.AF_INET, "127.0.0.1"); tcp(socket.AF_INET6, "::1")
udp(socket.AF_INET, "127.0.0.1", 53); udp(socket.AF_INET6, "::1", 5353)
