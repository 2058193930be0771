/*
 * The HTTP/2 codecs' allocator cache, seen from outside http2/ (which alone includes nghttp2.h).
 */
#ifndef remora__h2mem_h
#define remora__h2mem_h

/** Frees the calling thread's cached nghttp2 blocks. Worker thread, at exit. */
void rm_h2_mem_thread_exit(void);

#endif
