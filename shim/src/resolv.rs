//! Name resolution for programs in a stack: getaddrinfo, getnameinfo and the gethostbyname
//! family resolve through the default stack (its nameservers and /etc/hosts, see
//! `vdestack::internal::resolve`), not the host's resolver. Without a default stack they are libc's.

use std::ffi::{c_char, CStr};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ptr;

use libc::{addrinfo, c_int, hostent, size_t, sockaddr, socklen_t};
use vdestack::internal::resolve::{self, Want};
use vdestack::Stack;

use crate::interpose::default_stack;
use crate::real::real;

const HOST_NOT_FOUND: c_int = 1;
const TRY_AGAIN: c_int = 2;
const NO_RECOVERY: c_int = 3;

extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

fn set_h_errno(v: c_int) {
    // SAFETY: glibc's per-thread h_errno slot.
    unsafe { *__h_errno_location() = v };
}

/// The stack lookups go through, unless the engine itself is asking.
fn stack() -> Option<&'static Stack> {
    default_stack().filter(|_| !vdestack::internal::on_engine_thread())
}

/// # Safety
/// `s` is NULL or NUL-terminated.
unsafe fn text<'a>(s: *const c_char) -> Option<&'a str> {
    // SAFETY: as the caller promises.
    (!s.is_null())
        .then(|| unsafe { CStr::from_ptr(s) }.to_str().ok())
        .flatten()
}

fn want_of(family: c_int) -> Option<Want> {
    match family {
        libc::AF_UNSPEC => Some(Want::Any),
        libc::AF_INET => Some(Want::V4),
        libc::AF_INET6 => Some(Want::V6),
        _ => None,
    }
}

/// getaddrinfo(3).
///
/// # Safety
/// As getaddrinfo(3).
#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let Some(s) = stack() else {
        // SAFETY: libc's getaddrinfo with the caller's arguments.
        return unsafe { (real().getaddrinfo)(node, service, hints, res) };
    };
    crate::guard(libc::EAI_FAIL, || {
        // SAFETY: the caller's arguments, as getaddrinfo(3) takes them.
        unsafe { addrinfo_in(s, node, service, hints, res) }.unwrap_or_else(|e| e)
    })
}

/// # Safety
/// As getaddrinfo(3).
unsafe fn addrinfo_in(
    s: &Stack,
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> Result<c_int, c_int> {
    if res.is_null() || (node.is_null() && service.is_null()) {
        return Err(libc::EAI_NONAME);
    }
    // SAFETY: hints is NULL or the caller's valid addrinfo.
    let (flags, family, socktype, protocol) = match unsafe { hints.as_ref() } {
        Some(h) => (h.ai_flags, h.ai_family, h.ai_socktype, h.ai_protocol),
        None => (
            libc::AI_V4MAPPED | libc::AI_ADDRCONFIG,
            libc::AF_UNSPEC,
            0,
            0,
        ),
    };
    let want = want_of(family).ok_or(libc::EAI_FAMILY)?;
    let types: Vec<(c_int, c_int)> = match socktype {
        0 => vec![
            (libc::SOCK_STREAM, libc::IPPROTO_TCP),
            (libc::SOCK_DGRAM, libc::IPPROTO_UDP),
        ],
        libc::SOCK_STREAM => vec![(libc::SOCK_STREAM, libc::IPPROTO_TCP)],
        libc::SOCK_DGRAM => vec![(libc::SOCK_DGRAM, libc::IPPROTO_UDP)],
        _ => return Err(libc::EAI_SOCKTYPE),
    };
    // SAFETY: the caller's strings.
    let (name, serv) = unsafe { (text(node), text(service)) };
    if (!node.is_null() && name.is_none()) || (!service.is_null() && serv.is_none()) {
        return Err(libc::EAI_NONAME);
    }
    let port = match serv {
        None => 0,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) if flags & libc::AI_NUMERICSERV != 0 => return Err(libc::EAI_NONAME),
            // SAFETY: getservbyname reads /etc/services; service is NUL-terminated.
            Err(_) => match unsafe { libc::getservbyname(service, ptr::null()).as_ref() } {
                Some(se) => u16::from_be(se.s_port as u16),
                None => return Err(libc::EAI_SERVICE),
            },
        },
    };
    let mut ips: Vec<IpAddr> = match name {
        None => {
            let passive = flags & libc::AI_PASSIVE != 0;
            let v4: IpAddr = if passive {
                [0, 0, 0, 0].into()
            } else {
                [127, 0, 0, 1].into()
            };
            let v6: IpAddr = if passive {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            vec![v4, v6]
        }
        Some(n) if flags & libc::AI_NUMERICHOST != 0 => {
            vec![n.parse().map_err(|_| libc::EAI_NONAME)?]
        }
        Some(n) => {
            let lookup_want = if want == Want::V6 && flags & libc::AI_V4MAPPED != 0 {
                Want::Any
            } else {
                want
            };
            resolve::lookup(s, n, lookup_want).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => libc::EAI_NONAME,
                _ => libc::EAI_AGAIN,
            })?
        }
    };
    if want == Want::V6 && flags & libc::AI_V4MAPPED != 0 {
        let has_v6 = ips.iter().any(|ip| ip.is_ipv6());
        ips = ips
            .into_iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) if !has_v6 || flags & libc::AI_ALL != 0 => {
                    Some(IpAddr::V6(v4.to_ipv6_mapped()))
                }
                IpAddr::V4(_) => None,
                v6 => Some(v6),
            })
            .collect();
    }
    ips.retain(|ip| match want {
        Want::Any => true,
        Want::V4 => ip.is_ipv4(),
        Want::V6 => ip.is_ipv6(),
    });
    if ips.is_empty() {
        return Err(libc::EAI_NONAME);
    }
    let canon = (flags & libc::AI_CANONNAME != 0).then(|| name.unwrap_or("localhost"));
    let mut head: *mut addrinfo = ptr::null_mut();
    let mut tail: *mut *mut addrinfo = &mut head;
    for ip in ips {
        for &(ty, proto) in &types {
            if protocol != 0 && protocol != proto {
                continue;
            }
            let node = alloc_node(
                SocketAddr::new(ip, port),
                ty,
                proto,
                if head.is_null() { canon } else { None },
            );
            if node.is_null() {
                // SAFETY: head is a list of our nodes, freed the way freeaddrinfo frees.
                unsafe { libc::freeaddrinfo(head) };
                return Err(libc::EAI_MEMORY);
            }
            // SAFETY: tail points at the last node's ai_next (or head).
            unsafe {
                *tail = node;
                tail = &mut (*node).ai_next;
            }
        }
    }
    if head.is_null() {
        return Err(libc::EAI_SOCKTYPE);
    }
    // SAFETY: res is the caller's, checked non-null.
    unsafe { *res = head };
    Ok(0)
}

/// One addrinfo and its address in one malloc'd block, with the canonical name malloc'd
/// apart: the layout glibc's freeaddrinfo frees.
fn alloc_node(a: SocketAddr, ty: c_int, proto: c_int, canon: Option<&str>) -> *mut addrinfo {
    let size = size_of::<addrinfo>() + size_of::<libc::sockaddr_storage>();
    // SAFETY: calloc returns zeroed memory or NULL.
    let node = unsafe { libc::calloc(1, size) } as *mut addrinfo;
    if node.is_null() {
        return node;
    }
    let (ss, len) = vdestack::internal::sys::std_to_sockaddr(&a);
    // SAFETY: node is a fresh block of `size` bytes, suitably aligned by calloc.
    unsafe {
        let addr = node.add(1) as *mut libc::sockaddr_storage;
        ptr::write(addr, ss);
        (*node).ai_family = if a.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        (*node).ai_socktype = ty;
        (*node).ai_protocol = proto;
        (*node).ai_addrlen = len;
        (*node).ai_addr = addr as *mut sockaddr;
        if let Some(c) = canon {
            let cs = std::ffi::CString::new(c).unwrap_or_default();
            (*node).ai_canonname = libc::strdup(cs.as_ptr());
        }
    }
    node
}

/// getnameinfo(3): numeric through libc, names from /etc/hosts (there is no reverse DNS).
///
/// # Safety
/// As getnameinfo(3).
#[no_mangle]
pub unsafe extern "C" fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> c_int {
    let real_gni = real().getnameinfo;
    if stack().is_none() {
        // SAFETY: libc's getnameinfo with the caller's arguments.
        return unsafe { real_gni(sa, salen, host, hostlen, serv, servlen, flags) };
    }
    crate::guard(libc::EAI_FAIL, || {
        // Numeric forms never touch the network.
        // SAFETY: the caller's arguments, with NI_NUMERICHOST added.
        let r = unsafe {
            real_gni(
                sa,
                salen,
                host,
                hostlen,
                serv,
                servlen,
                flags | libc::NI_NUMERICHOST,
            )
        };
        if r != 0 || host.is_null() || flags & libc::NI_NUMERICHOST != 0 {
            return r;
        }
        // SAFETY: sa has salen bytes, as the caller promises.
        let name = unsafe { vdestack::internal::sys::sockaddr_to_std(sa, salen as usize) }
            .and_then(|a| {
                resolve::hosts_names(vdestack::internal::sys::unmap(a.ip()))
                    .into_iter()
                    .next()
            });
        match name {
            Some(n) if n.len() < hostlen as usize => {
                // SAFETY: host has hostlen bytes; n and its NUL fit.
                unsafe {
                    ptr::copy_nonoverlapping(n.as_ptr(), host as *mut u8, n.len());
                    *host.add(n.len()) = 0;
                }
                0
            }
            Some(_) => libc::EAI_OVERFLOW,
            None if flags & libc::NI_NAMEREQD != 0 => libc::EAI_NONAME,
            None => 0,
        }
    })
}

/// Fills `ret` with `name`'s addresses of `family`, using `buf` for everything it points to.
///
/// # Safety
/// `ret` is valid; `buf` has `buflen` writable bytes.
unsafe fn fill_hostent(
    s: &Stack,
    name: &str,
    family: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
) -> Result<(), (c_int, c_int)> {
    let want = match family {
        libc::AF_INET => Want::V4,
        libc::AF_INET6 => Want::V6,
        _ => return Err((libc::EAFNOSUPPORT, NO_RECOVERY)),
    };
    let ips = resolve::lookup(s, name, want).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => (libc::ENOENT, HOST_NOT_FOUND),
        _ => (libc::EAGAIN, TRY_AGAIN),
    })?;
    let alen = if family == libc::AF_INET { 4 } else { 16 };
    let ptrs = size_of::<*mut c_char>();
    // Layout: [addr_list pointers + NULL][aliases NULL][addresses][name NUL], pointers first
    // for alignment (buf is aligned by the caller's allocation, checked below).
    let need = (ips.len() + 2) * ptrs + ips.len() * alen + name.len() + 1;
    let pad = (buf as usize).wrapping_neg() % align_of::<*mut c_char>();
    if buf.is_null() || buflen < need + pad {
        return Err((libc::ERANGE, NO_RECOVERY));
    }
    // SAFETY: buf has buflen >= need + pad bytes; every write below stays inside.
    unsafe {
        let base = buf.add(pad);
        let list = base as *mut *mut c_char;
        let aliases = list.add(ips.len() + 1);
        let mut data = base.add((ips.len() + 2) * ptrs);
        for (i, ip) in ips.iter().enumerate() {
            match ip {
                IpAddr::V4(a) => ptr::copy_nonoverlapping(a.octets().as_ptr(), data as *mut u8, 4),
                IpAddr::V6(a) => ptr::copy_nonoverlapping(a.octets().as_ptr(), data as *mut u8, 16),
            }
            *list.add(i) = data;
            data = data.add(alen);
        }
        *list.add(ips.len()) = ptr::null_mut();
        *aliases = ptr::null_mut();
        ptr::copy_nonoverlapping(name.as_ptr(), data as *mut u8, name.len());
        *data.add(name.len()) = 0;
        *ret = hostent {
            h_name: data,
            h_aliases: aliases,
            h_addrtype: family,
            h_length: alen as c_int,
            h_addr_list: list,
        };
    }
    Ok(())
}

/// gethostbyname2_r(3).
///
/// # Safety
/// As gethostbyname2_r(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    family: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let Some(s) = stack() else {
        // SAFETY: libc's function with the caller's arguments.
        return unsafe {
            (real().gethostbyname2_r)(name, family, ret, buf, buflen, result, h_errnop)
        };
    };
    crate::guard(libc::EIO, || {
        // SAFETY: the caller's arguments.
        unsafe {
            if !result.is_null() {
                *result = ptr::null_mut();
            }
            let Some(n) = text(name).filter(|_| !ret.is_null()) else {
                return libc::EINVAL;
            };
            match fill_hostent(s, n, family, ret, buf, buflen) {
                Ok(()) => {
                    if !result.is_null() {
                        *result = ret;
                    }
                    0
                }
                Err((err, herr)) => {
                    if !h_errnop.is_null() {
                        *h_errnop = herr;
                    }
                    err
                }
            }
        }
    })
}

/// gethostbyname_r(3).
///
/// # Safety
/// As gethostbyname_r(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: size_t,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> c_int {
    if stack().is_none() {
        // SAFETY: libc's function with the caller's arguments.
        return unsafe { (real().gethostbyname_r)(name, ret, buf, buflen, result, h_errnop) };
    }
    // SAFETY: the caller's arguments.
    unsafe { gethostbyname2_r(name, libc::AF_INET, ret, buf, buflen, result, h_errnop) }
}

thread_local! {
    /// gethostbyname's result: per thread (glibc's is per process, which is only worse).
    static HOSTENT: std::cell::RefCell<(Box<hostent>, Vec<u8>)> = std::cell::RefCell::new((
        // SAFETY: hostent is plain old data; all-zero is a valid (empty) value.
        Box::new(unsafe { std::mem::zeroed() }),
        vec![0u8; 8192],
    ));
}

/// gethostbyname2(3).
///
/// # Safety
/// As gethostbyname2(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, family: c_int) -> *mut hostent {
    if stack().is_none() {
        // SAFETY: libc's function with the caller's arguments.
        return unsafe { (real().gethostbyname2)(name, family) };
    }
    crate::guard(ptr::null_mut(), || {
        HOSTENT.with(|h| {
            let mut h = h.borrow_mut();
            let (ret, buf) = &mut *h;
            let mut result = ptr::null_mut();
            let mut herr = 0;
            let ret: *mut hostent = &mut **ret;
            // SAFETY: our own buffers, sized as passed.
            let r = unsafe {
                gethostbyname2_r(
                    name,
                    family,
                    ret,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len(),
                    &mut result,
                    &mut herr,
                )
            };
            if r != 0 {
                set_h_errno(herr);
            }
            result
        })
    })
}

/// gethostbyname(3).
///
/// # Safety
/// As gethostbyname(3).
#[no_mangle]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    if stack().is_none() {
        // SAFETY: libc's function with the caller's arguments.
        return unsafe { (real().gethostbyname)(name) };
    }
    // SAFETY: the caller's argument.
    unsafe { gethostbyname2(name, libc::AF_INET) }
}

const NO_DATA: c_int = 4;

/// res_query(3) through the stack: the raw reply to one query, its length, or -1 with
/// h_errno (HOST_NOT_FOUND, NO_DATA, TRY_AGAIN).
///
/// # Safety
/// `name` is NUL-terminated; `answer` has `anslen` writable bytes.
unsafe fn query_in(
    s: &Stack,
    name: *const c_char,
    class: c_int,
    ty: c_int,
    answer: *mut u8,
    anslen: c_int,
) -> c_int {
    // SAFETY: as the caller promises.
    let Some(n) = (unsafe { text(name) }) else {
        set_h_errno(NO_RECOVERY);
        return -1;
    };
    let reply = match resolve::raw_query(s, n, class as u16, ty as u16) {
        Ok(r) => r,
        Err(e) => {
            set_h_errno(if e.kind() == io::ErrorKind::InvalidInput {
                NO_RECOVERY
            } else {
                TRY_AGAIN
            });
            return -1;
        }
    };
    // RCODE is the low nibble of byte 3; ANCOUNT bytes 6-7.
    let rcode = reply.get(3).map_or(2, |b| b & 0xf);
    let ancount = reply
        .get(6..8)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    if rcode == 3 {
        set_h_errno(HOST_NOT_FOUND);
        return -1;
    }
    if rcode != 0 || ancount == 0 {
        set_h_errno(if rcode == 0 { NO_DATA } else { TRY_AGAIN });
        return -1;
    }
    if !answer.is_null() && anslen > 0 {
        let k = reply.len().min(anslen as usize);
        // SAFETY: answer has anslen >= k writable bytes.
        unsafe { ptr::copy_nonoverlapping(reply.as_ptr(), answer, k) };
    }
    reply.len() as c_int
}

macro_rules! res_export {
    ($name:ident, $real:literal) => {
        /// A res_query(3) family function: through the default stack when there is one.
        ///
        /// # Safety
        /// As res_query(3).
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            name: *const c_char,
            class: c_int,
            ty: c_int,
            answer: *mut u8,
            anslen: c_int,
        ) -> c_int {
            match stack() {
                // SAFETY: the caller's arguments.
                Some(s) => crate::guard(-1, || unsafe {
                    query_in(s, name, class, ty, answer, anslen)
                }),
                None => {
                    type F =
                        unsafe extern "C" fn(*const c_char, c_int, c_int, *mut u8, c_int) -> c_int;
                    static REAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
                    let f = *REAL.get_or_init(|| {
                        crate::real::find(concat!($real, "\0").as_bytes()) as usize
                    });
                    // SAFETY: f is libc's function of that name, with this C type.
                    unsafe { std::mem::transmute::<usize, F>(f)(name, class, ty, answer, anslen) }
                }
            }
        }
    };
}

// res_search gets no search-domain walk: names are tried as they are.
res_export!(res_query, "res_query");
res_export!(res_search, "res_search");
res_export!(__res_query, "__res_query");
res_export!(__res_search, "__res_search");
