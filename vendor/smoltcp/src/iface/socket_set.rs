use alloc::collections::{BTreeMap, BinaryHeap};
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::fmt;
use managed::ManagedSlice;

use super::socket_meta::Meta;
use crate::socket::{AnySocket, PollAt, Socket};
use crate::time::Instant;
use crate::wire::IpEndpoint;

/// vdestack: a TCP connection's (local, remote) endpoints, the key of the demux index.
pub(crate) type TcpKey = (IpEndpoint, IpEndpoint);

/// Opaque struct with space for storing one socket.
///
/// This is public so you can use it to allocate space for storing
/// sockets when creating an Interface.
#[derive(Debug, Default)]
pub struct SocketStorage<'a> {
    inner: Option<Item<'a>>,
}

impl<'a> SocketStorage<'a> {
    pub const EMPTY: Self = Self { inner: None };
}

/// An item of a socket set.
#[derive(Debug)]
pub(crate) struct Item<'a> {
    pub(crate) meta: Meta,
    pub(crate) socket: Socket<'a>,
    /// vdestack: the socket may have something to send, so egress must look at it (set by
    /// `get_mut` and by ingress; cleared when egress dispatched it).
    pub(crate) egress_dirty: bool,
    /// vdestack: the socket's `poll_at` after its last dispatch, valid while not dirty.
    pub(crate) cached_poll_at: PollAt,
    /// vdestack: listed in the set's `touched` list since the user last took it.
    pub(crate) touched: bool,
    /// vdestack: the key under which the TCP demux index knows this socket.
    pub(crate) indexed: Option<TcpKey>,
    /// vdestack: the user's tag for the socket (0 until `set_owner`).
    pub(crate) owner: u64,
}

impl Item<'_> {
    /// vdestack: ingress changed the socket: egress and the user should look.
    pub(crate) fn mark(&mut self, touched: &mut Vec<SocketHandle>, egress: &mut Vec<SocketHandle>) {
        self.dirty(egress);
        if !self.touched {
            self.touched = true;
            touched.push(self.meta.handle);
        }
    }

    /// vdestack: egress should look at the socket.
    pub(crate) fn dirty(&mut self, egress: &mut Vec<SocketHandle>) {
        if !self.egress_dirty {
            self.egress_dirty = true;
            egress.push(self.meta.handle);
        }
    }
}

/// A handle, identifying a socket in an Interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SocketHandle(usize);

impl fmt::Display for SocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// vdestack: the sizes [`SocketSet::sizes`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetSizes {
    /// Sockets in the set.
    pub sockets: usize,
    /// Slots, used or free (what the set's storage holds).
    pub slots: usize,
    /// Entries of the TCP 4-tuple index.
    pub index: usize,
    /// Entries of the listeners list.
    pub listeners: usize,
    /// Entries of the timer heap.
    pub timers: usize,
}

/// An extensible set of sockets.
///
/// The lifetime `'a` is used when storing a `Socket<'a>`.  If you're using
/// owned buffers for your sockets (passed in as `Vec`s) you can use
/// `SocketSet<'static>`.
#[derive(Debug)]
pub struct SocketSet<'a> {
    sockets: ManagedSlice<'a, SocketStorage<'a>>,
    /// vdestack: empty slots, so `add` does not scan thousands of sockets.
    free: Vec<usize>,
    /// vdestack: sockets that ingress or egress changed since the user last took the list.
    pub(crate) touched: Vec<SocketHandle>,
    /// vdestack: TCP sockets by 4-tuple, so a segment finds its socket without visiting
    /// every socket. A cache: entries are checked with `accepts` before use.
    pub(crate) tcp_index: BTreeMap<TcpKey, SocketHandle>,
    /// vdestack: sockets the user said listen (`note_listener`), where a segment that is
    /// not in `tcp_index` is looked for before visiting every socket.
    pub(crate) listeners: Vec<SocketHandle>,
    /// vdestack: sockets egress must look at (touched, or with something to send now).
    pub(crate) egress_list: Vec<SocketHandle>,
    /// vdestack: the owner tag of the last socket a packet reached.
    last_reached: Option<u64>,
    /// vdestack: ports the user listens on (with a count of listeners), where a SYN that
    /// finds no free socket is dropped rather than reset.
    pub(crate) listen_ports: BTreeMap<u16, usize>,
    /// vdestack: sockets waiting for a time of their own, earliest first. An entry goes stale
    /// when its socket is touched or removed; egress and `poll_at` tolerate that.
    pub(crate) timers: BinaryHeap<Reverse<(Instant, SocketHandle)>>,
    /// vdestack: how many timer entries the last `drop_stale_timers` kept.
    timers_kept: usize,
    /// vdestack: tests count the TCP segments that fell back to visiting every socket.
    #[cfg(test)]
    pub(crate) demux_scans: usize,
    /// vdestack: tests count the sockets egress looked at.
    #[cfg(test)]
    pub(crate) egress_visits: usize,
}

impl<'a> SocketSet<'a> {
    /// Create a socket set using the provided storage.
    pub fn new<SocketsT>(sockets: SocketsT) -> SocketSet<'a>
    where
        SocketsT: Into<ManagedSlice<'a, SocketStorage<'a>>>,
    {
        let sockets = sockets.into();
        SocketSet {
            sockets,
            free: Vec::new(),
            touched: Vec::new(),
            tcp_index: BTreeMap::new(),
            egress_list: Vec::new(),
            timers: BinaryHeap::new(),
            timers_kept: 0,
            listeners: Vec::new(),
            last_reached: None,
            listen_ports: BTreeMap::new(),
            #[cfg(test)]
            demux_scans: 0,
            #[cfg(test)]
            egress_visits: 0,
        }
    }

    /// vdestack: a listener on `port` opens (`on`) or closes. While one is open, a SYN to the
    /// port that finds no free socket is dropped (the peer sends it again), as a Linux
    /// listener with a full queue does, instead of refused with a reset.
    pub fn listening_port(&mut self, port: u16, on: bool) {
        let n = self.listen_ports.entry(port).or_insert(0);
        if on {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.listen_ports.remove(&port);
            }
        }
    }

    /// vdestack: the owner tag of the socket the last packet reached, once: with
    /// `Interface::poll_ingress_single`, the user can react between two packets (a listener
    /// puts a fresh socket in place of the one a SYN took).
    pub fn take_last_reached(&mut self) -> Option<u64> {
        self.last_reached.take()
    }

    /// vdestack: says that the TCP socket at `handle` listens, so that SYNs find it without
    /// a visit to every socket. Entries of sockets that stopped listening are dropped as
    /// they are met.
    pub fn note_listener(&mut self, handle: SocketHandle) {
        if !self.listeners.contains(&handle) {
            self.listeners.push(handle);
        }
    }

    /// vdestack: how full the set and its own lists are, to check that nothing grows.
    pub fn sizes(&self) -> SetSizes {
        SetSizes {
            sockets: self.items().count(),
            slots: self.sockets.len(),
            index: self.tcp_index.len(),
            listeners: self.listeners.len(),
            timers: self.timers.len(),
        }
    }

    /// vdestack: the live item at `handle`, if any.
    pub(crate) fn item(&self, handle: SocketHandle) -> Option<&Item<'a>> {
        self.sockets.get(handle.0).and_then(|s| s.inner.as_ref())
    }

    /// vdestack: egress should look at the socket.
    pub(crate) fn mark_egress(&mut self, handle: SocketHandle) {
        if let Some(item) = self
            .sockets
            .get_mut(handle.0)
            .and_then(|s| s.inner.as_mut())
        {
            item.egress_dirty = true;
            self.egress_list.push(handle);
        }
    }

    /// vdestack: tags a socket with a number of the user's (who owns it), which
    /// `take_touched` gives back.
    pub fn set_owner(&mut self, handle: SocketHandle, owner: u64) {
        if let Some(item) = self.item_mut(handle) {
            item.owner = owner;
        }
    }

    /// vdestack: takes the sockets, with their owner tags, that received something or whose
    /// timers ran since the last call; only those can have changed without the user's doing.
    pub fn take_touched(&mut self) -> Vec<(SocketHandle, u64)> {
        let list = core::mem::take(&mut self.touched);
        let mut out = Vec::with_capacity(list.len());
        for h in list {
            if let Some(item) = self.item_mut(h) {
                item.touched = false;
                out.push((h, item.owner));
            }
        }
        out
    }

    /// vdestack: the socket changed by ingress: egress and the user should look at it.
    pub(crate) fn mark_dirty(&mut self, handle: SocketHandle) {
        if let Some(item) = self
            .sockets
            .get_mut(handle.0)
            .and_then(|s| s.inner.as_mut())
        {
            item.mark(&mut self.touched, &mut self.egress_list);
            self.last_reached = Some(item.owner);
        }
    }

    /// vdestack: the socket was dispatched: the user should look at it.
    pub(crate) fn mark_touched(&mut self, handle: SocketHandle) {
        if let Some(item) = self
            .sockets
            .get_mut(handle.0)
            .and_then(|s| s.inner.as_mut())
        {
            if !item.touched {
                item.touched = true;
                self.touched.push(handle);
            }
        }
    }

    /// vdestack: files a TCP socket under its current 4-tuple, so that the first segment for
    /// a connection the user just opened finds it at once.
    #[cfg(feature = "socket-tcp")]
    pub fn index_tcp(&mut self, handle: SocketHandle) {
        let tuple = self.item(handle).and_then(|i| match &i.socket {
            Socket::Tcp(s) => s.local_endpoint().zip(s.remote_endpoint()),
            #[allow(unreachable_patterns)]
            _ => None,
        });
        self.reindex(handle, tuple);
    }

    /// vdestack: files a TCP socket under its current 4-tuple (or under none).
    pub(crate) fn reindex(&mut self, handle: SocketHandle, tuple: Option<TcpKey>) {
        let Some(item) = self
            .sockets
            .get_mut(handle.0)
            .and_then(|s| s.inner.as_mut())
        else {
            return;
        };
        if let Some(old) = item.indexed.take() {
            if self.tcp_index.get(&old) == Some(&handle) {
                self.tcp_index.remove(&old);
            }
        }
        if let Some(key) = tuple {
            item.indexed = Some(key);
            self.tcp_index.insert(key, handle);
        }
    }

    /// vdestack: the live item at `handle`, if any.
    pub(crate) fn item_mut(&mut self, handle: SocketHandle) -> Option<&mut Item<'a>> {
        self.sockets
            .get_mut(handle.0)
            .and_then(|s| s.inner.as_mut())
    }

    /// Add a socket to the set, and return its handle.
    ///
    /// # Panics
    /// This function panics if the storage is fixed-size (not a `Vec`) and is full.
    pub fn add<T: AnySocket<'a>>(&mut self, socket: T) -> SocketHandle {
        fn put<'a>(index: usize, slot: &mut SocketStorage<'a>, socket: Socket<'a>) -> SocketHandle {
            net_trace!("[{}]: adding", index);
            let handle = SocketHandle(index);
            let mut meta = Meta::default();
            meta.handle = handle;
            *slot = SocketStorage {
                inner: Some(Item {
                    meta,
                    socket,
                    egress_dirty: true,
                    cached_poll_at: PollAt::Now,
                    touched: false,
                    indexed: None,
                    owner: 0,
                }),
            };
            handle
        }

        let socket = socket.upcast();
        let handle = self.put_somewhere(socket, put);
        self.egress_list.push(handle); // new items start dirty
        handle
    }

    fn put_somewhere(
        &mut self,
        socket: Socket<'a>,
        put: fn(usize, &mut SocketStorage<'a>, Socket<'a>) -> SocketHandle,
    ) -> SocketHandle {
        while let Some(index) = self.free.pop() {
            if let Some(slot) = self.sockets.get_mut(index) {
                if slot.inner.is_none() {
                    return put(index, slot, socket);
                }
            }
        }
        if let ManagedSlice::Borrowed(_) = &self.sockets {
            for (index, slot) in self.sockets.iter_mut().enumerate() {
                if slot.inner.is_none() {
                    return put(index, slot, socket);
                }
            }
        }

        match &mut self.sockets {
            ManagedSlice::Borrowed(_) => panic!("adding a socket to a full SocketSet"),
            #[cfg(feature = "alloc")]
            ManagedSlice::Owned(sockets) => {
                sockets.push(SocketStorage { inner: None });
                let index = sockets.len() - 1;
                put(index, &mut sockets[index], socket)
            }
        }
    }

    /// Get a socket from the set by its handle, as mutable.
    ///
    /// # Panics
    /// This function may panic if the handle does not belong to this socket set
    /// or the socket has the wrong type.
    pub fn get<T: AnySocket<'a>>(&self, handle: SocketHandle) -> &T {
        match self.sockets[handle.0].inner.as_ref() {
            Some(item) => {
                T::downcast(&item.socket).expect("handle refers to a socket of a wrong type")
            }
            None => panic!("handle does not refer to a valid socket"),
        }
    }

    /// Get a mutable socket from the set by its handle, as mutable.
    ///
    /// # Panics
    /// This function may panic if the handle does not belong to this socket set
    /// or the socket has the wrong type.
    pub fn get_mut<T: AnySocket<'a>>(&mut self, handle: SocketHandle) -> &mut T {
        match self.sockets[handle.0].inner.as_mut() {
            Some(item) => {
                item.dirty(&mut self.egress_list);
                T::downcast_mut(&mut item.socket)
                    .expect("handle refers to a socket of a wrong type")
            }
            None => panic!("handle does not refer to a valid socket"),
        }
    }

    /// Remove a socket from the set, without changing its state.
    ///
    /// # Panics
    /// This function may panic if the handle does not belong to this socket set.
    pub fn remove(&mut self, handle: SocketHandle) -> Socket<'a> {
        net_trace!("[{}]: removing", handle.0);
        match self.sockets[handle.0].inner.take() {
            Some(item) => {
                if let Some(key) = item.indexed {
                    if self.tcp_index.get(&key) == Some(&handle) {
                        self.tcp_index.remove(&key);
                    }
                }
                self.free.push(handle.0);
                self.drop_stale_timers();
                item.socket
            }
            None => panic!("handle does not refer to a valid socket"),
        }
    }

    /// vdestack: a removed socket's timer entries would stay until their time (TIME-WAIT's
    /// is 10 s away), so a set that opens and closes connections fast would hold as many as
    /// it closed in that time: once they outnumber the sockets four to one, the stale ones
    /// go.
    /// (Also not before the heap has doubled since the last time, so that the work stays a
    /// constant per entry when live sockets' own entries are many.)
    fn drop_stale_timers(&mut self) {
        let live = self.sockets.len().saturating_sub(self.free.len());
        let n = self.timers.len();
        if n > 64 && n > 4 * live && n > 2 * self.timers_kept {
            // An entry is live when its socket still waits for that time (a new socket in
            // the slot has entries of its own).
            let sockets = &self.sockets;
            self.timers.retain(|Reverse((t, h))| {
                sockets
                    .get(h.0)
                    .and_then(|s| s.inner.as_ref())
                    .is_some_and(|i| i.cached_poll_at == PollAt::Time(*t))
            });
            self.timers_kept = self.timers.len();
        }
    }

    /// Get an iterator to the inner sockets.
    pub fn iter(&self) -> impl Iterator<Item = (SocketHandle, &Socket<'a>)> {
        self.items().map(|i| (i.meta.handle, &i.socket))
    }

    /// Get a mutable iterator to the inner sockets.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SocketHandle, &mut Socket<'a>)> {
        let egress = &mut self.egress_list;
        self.sockets
            .iter_mut()
            .filter_map(|x| x.inner.as_mut())
            .map(move |i| {
                i.dirty(egress);
                (i.meta.handle, &mut i.socket)
            })
    }

    /// Iterate every socket in this set.
    pub(crate) fn items(&self) -> impl Iterator<Item = &Item<'a>> + '_ {
        self.sockets.iter().filter_map(|x| x.inner.as_ref())
    }

    /// Iterate every socket in this set.
    pub(crate) fn items_mut(&mut self) -> impl Iterator<Item = &mut Item<'a>> + '_ {
        self.sockets.iter_mut().filter_map(|x| x.inner.as_mut())
    }
}

#[cfg(all(test, feature = "socket-udp"))]
mod test_vdestack {
    use super::*;
    use crate::socket::udp;

    fn udp_socket() -> udp::Socket<'static> {
        let buf = || udp::PacketBuffer::new(vec![], vec![]);
        udp::Socket::new(buf(), buf())
    }

    /// vdestack: the timer entries of removed sockets do not pile up (drop_stale_timers),
    /// and those of live sockets stay.
    #[test]
    fn timers_of_removed_sockets_do_not_pile_up() {
        let mut set = SocketSet::new(vec![]);
        let keep = set.add(udp_socket());
        let at = Instant::from_secs(5);
        set.item_mut(keep).unwrap().cached_poll_at = PollAt::Time(at);
        set.timers.push(Reverse((at, keep)));
        for i in 0..10_000u64 {
            // Each in the slot the last one left: handles are reused.
            let h = set.add(udp_socket());
            let t = Instant::from_secs(10 + i as i64);
            set.item_mut(h).unwrap().cached_poll_at = PollAt::Time(t);
            set.timers.push(Reverse((t, h)));
            set.remove(h);
        }
        assert!(
            set.timers.iter().any(|e| *e == Reverse((at, keep))),
            "a live socket's entry stays"
        );
        assert!(set.timers.len() <= 2 * 64, "{} entries", set.timers.len());
    }
}
