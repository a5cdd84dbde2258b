use super::*;

use crate::socket::tcp::Socket;

impl InterfaceInner {
    pub(crate) fn process_tcp<'frame>(
        &mut self,
        sockets: &mut SocketSet,
        handled_by_raw_socket: bool,
        ip_repr: IpRepr,
        ip_payload: &'frame [u8],
    ) -> Option<Packet<'frame>> {
        let (src_addr, dst_addr) = (ip_repr.src_addr(), ip_repr.dst_addr());

        // Per RFC 1122 §3.2.1.3, the unspecified address must never appear as a source
        // or destination in any IP datagram. Drop such TCP segments early to avoid
        // creating sockets with unspecified peers (which would later panic on egress).
        // This is not done at the iface level because it might be useful with
        // UDP or raw sockets, but it's definitely not useful for TCP.
        if src_addr.is_unspecified() || dst_addr.is_unspecified() {
            return None;
        }

        let tcp_packet = check!(TcpPacket::new_checked(ip_payload));
        let tcp_repr = check!(TcpRepr::parse(
            &tcp_packet,
            &src_addr,
            &dst_addr,
            &self.caps.checksum
        ));

        // vdestack: the demux index first; every socket only when it misses (a SYN for a
        // listener, a connection's first segment).
        let key = (
            IpEndpoint::new(ip_repr.dst_addr(), tcp_repr.dst_port),
            IpEndpoint::new(ip_repr.src_addr(), tcp_repr.src_port),
        );
        let mut found = sockets.tcp_index.get(&key).copied().filter(|h| {
            sockets
                .item_mut(*h)
                .and_then(|i| tcp::Socket::downcast_mut(&mut i.socket))
                .is_some_and(|s| s.accepts(self, &ip_repr, &tcp_repr))
        });
        if found.is_none() {
            let mut i = 0;
            while i < sockets.listeners.len() {
                let h = sockets.listeners[i];
                let Some(s) = sockets
                    .item_mut(h)
                    .and_then(|i| tcp::Socket::downcast_mut(&mut i.socket))
                else {
                    sockets.listeners.swap_remove(i);
                    continue;
                };
                if s.accepts(self, &ip_repr, &tcp_repr) {
                    found = Some(h);
                    break;
                }
                if !matches!(
                    s.state(),
                    crate::socket::tcp::State::Listen | crate::socket::tcp::State::SynReceived
                ) {
                    sockets.listeners.swap_remove(i);
                    continue;
                }
                i += 1;
            }
        }
        if found.is_none() {
            #[cfg(test)]
            {
                sockets.demux_scans += 1;
            }
            found = sockets.items_mut().find_map(|i| {
                let h = i.meta.handle;
                Socket::downcast_mut(&mut i.socket)
                    .is_some_and(|s: &mut tcp::Socket| s.accepts(self, &ip_repr, &tcp_repr))
                    .then_some(h)
            });
        }
        if let Some(h) = found {
            self.reached.push(h);
            let item = sockets.item_mut(h)?;
            let tcp_socket = tcp::Socket::downcast_mut(&mut item.socket)?;
            let r = tcp_socket
                .process(self, &ip_repr, &tcp_repr)
                .map(|(ip, tcp)| Packet::new(ip, IpPayload::Tcp(tcp)));
            let tuple = tcp_socket
                .local_endpoint()
                .zip(tcp_socket.remote_endpoint());
            // vdestack: also when the index has another socket under this tuple (its entry
            // was overwritten), else each segment of this connection would scan again.
            let moved = tuple != item.indexed;
            if moved || tuple.is_some_and(|k| sockets.tcp_index.get(&k) != Some(&h)) {
                sockets.reindex(h, tuple);
            }
            return r;
        }

        // vdestack: a SYN for a listener whose sockets are all taken is dropped, not reset:
        // the peer sends it again, as to a Linux listener with a full queue.
        let listened = tcp_repr.control == TcpControl::Syn
            && tcp_repr.ack_number.is_none()
            && sockets.listen_ports.contains_key(&tcp_repr.dst_port);
        if listened
            || tcp_repr.control == TcpControl::Rst
            || ip_repr.dst_addr().is_unspecified()
            || ip_repr.src_addr().is_unspecified()
            || handled_by_raw_socket
        {
            // Never reply to a TCP RST packet with another TCP RST packet.
            // Never send a TCP RST packet with unspecified addresses.
            // Never send a TCP RST when packet has been handled by raw socket.
            None
        } else {
            // The packet wasn't handled by a socket, send a TCP RST packet.
            let (ip, tcp) = tcp::Socket::rst_reply(&ip_repr, &tcp_repr);
            Some(Packet::new(ip, IpPayload::Tcp(tcp)))
        }
    }
}
