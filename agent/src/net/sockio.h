/*
 * Writing to an h2o socket without a libuv write request when the socket takes the bytes at once.
 */
#ifndef remora__net_sockio_h
#define remora__net_sockio_h

#include <errno.h>
#include <sys/socket.h>
#include <h2o.h>

/*
 * Writes what the socket takes now, without h2o's (libuv's) write request: a libuv write that completes
 * re-registers the socket with epoll_ctl even when its events did not change (uv__drain stops POLLOUT,
 * which queues the watcher), one system call per response. Returns the bytes written; errors and EAGAIN
 * return 0 and are left to h2o's write, which reports them through its callback as usual. Cleartext
 * sockets only (TLS records go through h2o), and only when no h2o write is in flight (the caller's rule:
 * bytes must not overtake a pending write).
 */
static inline size_t
rm_socket_write_now(h2o_socket_t *sock, const char *p, size_t len)
{
    if (sock->ssl != NULL)
        return 0;
    ssize_t n;
    while ((n = send(h2o_socket_get_fd(sock), p, len, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0 && errno == EINTR)
        ;
    return n > 0 ? (size_t)n : 0;
}

#endif
