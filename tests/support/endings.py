# tests/endings.rs runs this on the kernel and under `vdestack run` and compares the output.
import socket, errno, signal, struct, threading, time
signal.alarm(30)  # a hang ends the program (and fails the test), not the suite
def tryc(f):
    try: return f()
    except OSError as e: return errno.errorcode[e.errno]
def soerr(s): return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
def state(s): return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
def pair():
    l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
    c = socket.create_connection(l.getsockname()); s, _ = l.accept(); l.close()
    return c, s
c, s = pair(); c.send(b"x" * 10); time.sleep(0.1); s.close(); time.sleep(0.1)
print("unread, send:", tryc(lambda: c.send(b"y")), tryc(lambda: c.send(b"y")), tryc(lambda: c.send(b"y")))
c, s = pair(); c.send(b"x" * 10); s.send(b"hi"); time.sleep(0.1); s.close(); time.sleep(0.1)
print("unread, recv:", tryc(lambda: c.recv(10)), tryc(lambda: c.recv(10)), tryc(lambda: c.recv(10)))
c, s = pair(); c.send(b"x" * 10); time.sleep(0.1); s.close(); time.sleep(0.1)
print("unread, SO_ERROR:", soerr(c), soerr(c), tryc(lambda: c.send(b"y")), state(c))
c, s = pair(); r = []
t = threading.Thread(target=lambda: r.append(tryc(lambda: c.sendall(b"z" * (64 << 20)))))
t.start(); time.sleep(0.3); s.close(); t.join(10)
print("blocked sendall:", r, tryc(lambda: c.send(b"y")))
c, s = pair(); r = []
t = threading.Thread(target=lambda: r.append(tryc(lambda: c.send(b"z" * (64 << 20)))))
t.start(); time.sleep(0.3); s.close(); t.join(10)
print("blocked send:", [type(x).__name__ for x in r], tryc(lambda: c.send(b"y")), tryc(lambda: c.send(b"y")))
c, s = pair(); s.close(); time.sleep(0.1)
a = [tryc(lambda: c.recv(1)), tryc(lambda: c.send(b"y"))]; time.sleep(0.1)
print("data after close:", a, tryc(lambda: c.send(b"y")), tryc(lambda: c.recv(1)), soerr(c), state(c))
c, s = pair()
print("TCP_LINGER2 default:", c.getsockopt(socket.IPPROTO_TCP, socket.TCP_LINGER2) == 60)
for wait in (0.3, 1.6):
    c, s = pair(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_LINGER2, 1); c.close(); time.sleep(wait)
    s.shutdown(socket.SHUT_WR); time.sleep(0.1)
    print("FIN-WAIT-2 after", wait, "s:", state(s), soerr(s), tryc(lambda: s.recv(1)), tryc(lambda: s.send(b"x")))
c, s = pair(); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
print("SO_LINGER:", struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)))
s.close(); time.sleep(0.1)
print("abortive close:", tryc(lambda: c.recv(1)), tryc(lambda: c.recv(1)), soerr(c))
