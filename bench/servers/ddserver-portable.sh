# ddserver's responder with the portable I/O backend (epoll +
# recvmmsg/sendmmsg) forced: the backend used where io_uring is refused
# (Docker's default seccomp profile). Same as ddserver.sh otherwise.
DDSERVER_IO=portable
DDSERVER_PORT=${DDSERVER_PORTABLE_PORT:-5307}
. "$(dirname "${BASH_SOURCE[0]}")/ddserver.sh"
