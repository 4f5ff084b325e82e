//! Socket creation and the small raw-syscall helpers both backends share:
//! SO_REUSEPORT binding (with port 0 resolved once for all workers),
//! sockaddr conversion, CPU pinning.
//!
//! Runs at start only; must never be called on the packet path (it allocates
//! and logs).

use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{IoConfig, IoError};

/// Attempts at finding a port free for both UDP and TCP when port 0 is asked.
const PORT_ZERO_ATTEMPTS: usize = 16;

/// Per worker: (UDP sockets, TCP listeners), one of each per listen address.
pub(super) type WorkerSockets = (Vec<OwnedFd>, Vec<OwnedFd>);

/// Binds one UDP socket and one TCP listener per listen address for every
/// worker, all with SO_REUSEPORT on the same port. For port 0 the first UDP
/// socket picks the port and everything else binds to it.
pub(super) fn bind_all(
    config: &IoConfig,
) -> Result<(Vec<SocketAddr>, Vec<WorkerSockets>), IoError> {
    let mut per_worker: Vec<WorkerSockets> = (0..config.workers)
        .map(|_| (Vec::new(), Vec::new()))
        .collect();
    let mut local = Vec::with_capacity(config.listen.len());
    for &addr in &config.listen {
        let mut attempt = 0;
        let (bound, mut socks) = loop {
            attempt += 1;
            match bind_address(config, addr) {
                Ok(ok) => break ok,
                // Port 0: the port the first UDP socket got may be taken for TCP.
                Err(IoError::Bind { .. }) if addr.port() == 0 && attempt < PORT_ZERO_ATTEMPTS => {}
                Err(e) => return Err(e),
            }
        };
        local.push(bound);
        for (w, (udp, tcp)) in socks.drain(..).enumerate() {
            per_worker[w].0.push(udp);
            per_worker[w].1.push(tcp);
        }
    }
    Ok((local, per_worker))
}

/// All workers' sockets for one address.
fn bind_address(
    config: &IoConfig,
    addr: SocketAddr,
) -> Result<(SocketAddr, Vec<(OwnedFd, OwnedFd)>), IoError> {
    let mut socks = Vec::with_capacity(config.workers);
    let mut bound = addr;
    for _ in 0..config.workers {
        let udp = udp_socket(config, bound)?;
        if bound.port() == 0 {
            bound = local_addr(&udp).map_err(|source| IoError::Bind {
                addr,
                transport: "UDP",
                source,
            })?;
        }
        let tcp = tcp_listener(bound)?;
        socks.push((udp, tcp));
    }
    Ok((bound, socks))
}

fn new_socket(
    addr: SocketAddr,
    ty: libc::c_int,
    transport: &'static str,
) -> Result<OwnedFd, IoError> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall, no pointers.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(IoError::Socket {
            addr,
            transport,
            what: "socket",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a fresh descriptor we own exclusively.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let opt = |level, name, value: libc::c_int, what| {
        setsockopt_int(fd.as_raw_fd(), level, name, value).map_err(|source| IoError::Socket {
            addr,
            transport,
            what,
            source,
        })
    };
    opt(libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "SO_REUSEADDR")?;
    opt(libc::SOL_SOCKET, libc::SO_REUSEPORT, 1, "SO_REUSEPORT")?;
    if addr.is_ipv6() {
        // `[::]` and `0.0.0.0` can then both be listed.
        opt(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1, "IPV6_V6ONLY")?;
    }
    Ok(fd)
}

fn udp_socket(config: &IoConfig, addr: SocketAddr) -> Result<OwnedFd, IoError> {
    let fd = new_socket(addr, libc::SOCK_DGRAM, "UDP")?;
    let size = config.udp_socket_buffer.min(i32::MAX as usize) as libc::c_int;
    // Best effort: the kernel caps these at rmem_max/wmem_max.
    let _ = setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, size);
    let _ = setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, size);
    bind(&fd, addr).map_err(|source| IoError::Bind {
        addr,
        transport: "UDP",
        source,
    })?;
    Ok(fd)
}

fn tcp_listener(addr: SocketAddr) -> Result<OwnedFd, IoError> {
    let fd = new_socket(addr, libc::SOCK_STREAM, "TCP")?;
    let err = |source| IoError::Bind {
        addr,
        transport: "TCP",
        source,
    };
    bind(&fd, addr).map_err(err)?;
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::listen(fd.as_raw_fd(), 1024) } < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(fd)
}

pub(super) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn bind(fd: &OwnedFd, addr: SocketAddr) -> std::io::Result<()> {
    let (storage, len) = to_sockaddr(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    let r = unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The address a socket is bound to.
pub(super) fn local_addr(fd: &OwnedFd) -> std::io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` has room for `len` bytes; the kernel writes at most that.
    let r = unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut storage).cast(), &mut len) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    from_sockaddr(&storage).ok_or_else(|| std::io::Error::other("unknown address family"))
}

/// A Rust address as a C sockaddr.
pub(super) fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// A C sockaddr as a Rust address (None for families other than IPv4/IPv6).
pub(super) fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The CPUs this process may run on, in ascending order.
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all-zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: passes a live cpu_set_t and its exact size.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if r < 0 {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the bit count of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu`; a refusal (EPERM, EINVAL) is only logged
/// at debug level: pinning is an optimisation.
pub(super) fn pin_to_cpu(cpu: usize) {
    // SAFETY: all-zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { zeroed() };
    // SAFETY: `cpu` comes from `allowed_cpus`, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: passes a live cpu_set_t and its exact size; 0 = this thread.
    let r = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if r < 0 {
        tracing::debug!(
            "responder I/O: not pinned to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Closes a descriptor the caller owns right away (refused connections).
pub(super) fn close_now(fd: RawFd) {
    // SAFETY: the caller owns `fd` and never uses it again.
    unsafe { libc::close(fd) };
}

/// A thin epoll instance (level-triggered).
#[derive(Debug)]
pub(super) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(super) fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall, no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(super) fn ctl(
        &self,
        op: libc::c_int,
        fd: RawFd,
        events: u32,
        token: u64,
    ) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live epoll_event; the kernel copies it.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub(super) fn add(&self, fd: RawFd, events: u32, token: u64) -> std::io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Waits up to `timeout_ms` (-1 = forever) and returns how many entries
    /// of `events` were filled. EINTR counts as zero events.
    pub(super) fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout_ms: i32,
    ) -> std::io::Result<usize> {
        // SAFETY: the kernel writes at most `events.len()` entries into `events`.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                events.len().min(i32::MAX as usize) as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }
}
