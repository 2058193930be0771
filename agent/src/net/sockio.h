/*
 * Two things h2o 2.2.5's sockets do not do well enough for a proxy: closing so that the socket is always
 * freed, and writing without a libuv write request when the socket takes the bytes at once.
 *
 * Closing.
 *
 * h2o 2.2.5 closes a TLS socket by writing close_notify first (shutdown_ssl). When the peer has reset
 * the connection, libuv has already marked the stream unwritable, uv_write fails at once, and h2o
 * drops that error: the write callback never comes and the socket (descriptor, SSL object, buffers)
 * stays open for the life of the process. Each reset TLS client leaked one descriptor that way.
 *
 * rm_socket_close closes a second time when a TLS shutdown write is still pending after the first
 * close; h2o then disposes of the socket at once ("write in progress" branch of shutdown_ssl; libuv
 * cancels the pending write). In the usual case close_notify is already in the kernel's send buffer
 * by then (libuv writes synchronously when it can), so a peer that reads still gets it; a peer that
 * does not read never made us wait for its close_notify either. A plain socket is disposed by the
 * first close and is not touched again.
 */
#ifndef remora__net_sockio_h
#define remora__net_sockio_h

#include <errno.h>
#include <sys/socket.h>
#include <h2o.h>

static inline void
rm_socket_close(h2o_socket_t *sock)
{
    h2o_socket_close(sock);
    /* h2o's libuv binding frees the socket in uv_close's callback, on a later loop iteration, so it can be read here;
     * dispose clears the write callback, so only a pending TLS shutdown flush leaves it set */
    if (h2o_socket_is_writing(sock))
        h2o_socket_close(sock);
}

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
