/*
 * The two routing filters of every chain:
 *  - rm_route_filter (first): matches the request to a route of its listener (stream->route), or
 *    answers locally (no route, not configured yet);
 *  - rm_router_filter (last): sends the request upstream. It owns the stream's attempts, applies
 *    the route's timeouts, and commits the attempt whose response goes downstream.
 *
 * Thread: the stream's worker.
 */
#ifndef remora__router_filter_h
#define remora__router_filter_h

#include "proxy/filter.h"

extern const rm_filter_t rm_route_filter;
extern const rm_filter_t rm_router_filter;

#endif
