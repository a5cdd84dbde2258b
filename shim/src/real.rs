//! libc's own socket functions, found behind ours with `dlsym(RTLD_NEXT)`.

use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

use libc::{c_int, msghdr, size_t, sockaddr, socklen_t, ssize_t};

/// The functions of libc that the library's exports stand in front of.
pub struct Real {
    pub socket: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int,
    pub socketpair: unsafe extern "C" fn(c_int, c_int, c_int, *mut c_int) -> c_int,
    pub close: unsafe extern "C" fn(c_int) -> c_int,
    pub fclose: unsafe extern "C" fn(*mut libc::FILE) -> c_int,
    pub dup: unsafe extern "C" fn(c_int) -> c_int,
    pub dup2: unsafe extern "C" fn(c_int, c_int) -> c_int,
    pub dup3: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int,
    /// fcntl is variadic; its third argument is an int or a pointer, passed in a register
    /// either way, so a machine word carries both.
    pub fcntl: unsafe extern "C" fn(c_int, c_int, usize) -> c_int,
    pub bind: unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int,
    pub connect: unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int,
    pub listen: unsafe extern "C" fn(c_int, c_int) -> c_int,
    pub accept: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int,
    pub accept4: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int,
    pub getsockname: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int,
    pub getpeername: unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int,
    pub getsockopt: unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int,
    pub setsockopt: unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int,
    pub shutdown: unsafe extern "C" fn(c_int, c_int) -> c_int,
    pub send: unsafe extern "C" fn(c_int, *const c_void, size_t, c_int) -> ssize_t,
    pub sendto: unsafe extern "C" fn(
        c_int,
        *const c_void,
        size_t,
        c_int,
        *const sockaddr,
        socklen_t,
    ) -> ssize_t,
    pub sendmsg: unsafe extern "C" fn(c_int, *const msghdr, c_int) -> ssize_t,
    pub recv: unsafe extern "C" fn(c_int, *mut c_void, size_t, c_int) -> ssize_t,
    pub recvfrom: unsafe extern "C" fn(
        c_int,
        *mut c_void,
        size_t,
        c_int,
        *mut sockaddr,
        *mut socklen_t,
    ) -> ssize_t,
    pub recvmsg: unsafe extern "C" fn(c_int, *mut msghdr, c_int) -> ssize_t,
    pub getaddrinfo: unsafe extern "C" fn(
        *const c_char,
        *const c_char,
        *const libc::addrinfo,
        *mut *mut libc::addrinfo,
    ) -> c_int,
    pub getnameinfo: unsafe extern "C" fn(
        *const sockaddr,
        socklen_t,
        *mut c_char,
        socklen_t,
        *mut c_char,
        socklen_t,
        c_int,
    ) -> c_int,
    pub gethostbyname: unsafe extern "C" fn(*const c_char) -> *mut libc::hostent,
    pub gethostbyname2: unsafe extern "C" fn(*const c_char, c_int) -> *mut libc::hostent,
    pub gethostbyname_r: unsafe extern "C" fn(
        *const c_char,
        *mut libc::hostent,
        *mut c_char,
        size_t,
        *mut *mut libc::hostent,
        *mut c_int,
    ) -> c_int,
    pub gethostbyname2_r: unsafe extern "C" fn(
        *const c_char,
        c_int,
        *mut libc::hostent,
        *mut c_char,
        size_t,
        *mut *mut libc::hostent,
        *mut c_int,
    ) -> c_int,
}

/// The next definition of the C function `name` (NUL-terminated) after ours: libc's.
pub fn find(name: &[u8]) -> *mut c_void {
    // SAFETY: name is NUL-terminated; RTLD_NEXT asks for the next definition after ours.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) };
    if p.is_null() {
        // Without libc's socket calls nothing can work; say which one and stop.
        let msg = b"libvdestack: cannot find libc's socket functions\n";
        // SAFETY: writing a static buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr() as *const c_void, msg.len()) };
        // SAFETY: abort never returns and is async-signal-safe.
        unsafe { libc::abort() };
    }
    p
}

/// libc's `fcntl64` (what programs built with _FILE_OFFSET_BITS=64 call), or its `fcntl`
/// where there is no such symbol (glibc before 2.28).
pub fn fcntl64() -> unsafe extern "C" fn(c_int, c_int, usize) -> c_int {
    static F: OnceLock<unsafe extern "C" fn(c_int, c_int, usize) -> c_int> = OnceLock::new();
    *F.get_or_init(|| {
        // SAFETY: RTLD_NEXT asks for the next definition after ours; the name is NUL-terminated.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"fcntl64".as_ptr()) };
        if p.is_null() {
            real().fcntl
        } else {
            // SAFETY: libc's fcntl64 has fcntl's C type.
            unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(c_int, c_int, usize) -> c_int>(p) }
        }
    })
}

macro_rules! load {
    ($($f:ident),*) => {
        Real {
            // SAFETY: each symbol is libc's function of that name, whose C type the field has.
            $($f: unsafe { std::mem::transmute::<*mut c_void, _>(find(concat!(stringify!($f), "\0").as_bytes())) },)*
        }
    };
}

/// libc's functions, looked up once.
// The field types say what each pointer becomes; spelling them again in the macro adds nothing.
#[allow(clippy::missing_transmute_annotations)]
pub fn real() -> &'static Real {
    static REAL: OnceLock<Real> = OnceLock::new();
    REAL.get_or_init(|| {
        load!(
            socket,
            socketpair,
            close,
            fclose,
            dup,
            dup2,
            dup3,
            fcntl,
            bind,
            connect,
            listen,
            accept,
            accept4,
            getsockname,
            getpeername,
            getsockopt,
            setsockopt,
            shutdown,
            send,
            sendto,
            sendmsg,
            recv,
            recvfrom,
            recvmsg,
            getaddrinfo,
            getnameinfo,
            gethostbyname,
            gethostbyname2,
            gethostbyname_r,
            gethostbyname2_r
        )
    })
}
