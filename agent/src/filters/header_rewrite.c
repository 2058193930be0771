#include <string.h>
#include "filters/header_rewrite.h"
#include "proxy/stream.h"

static int
is_empty(const rm_config_header_mod_t *mod)
{
    return mod->num_set == 0 && mod->num_add == 0 && mod->num_remove == 0;
}

static h2o_iovec_t
str(const char *s)
{
    return h2o_iovec_init(s, strlen(s));
}

/* `req` is NULL for a response: there `host` is an ordinary field */
static void
apply(h2o_mem_pool_t *pool, const rm_config_header_mod_t *mod, rm_headers_t *headers, rm_req_head_t *req)
{
    for (size_t i = 0; i != mod->num_set; ++i) {
        const rm_config_header_t *h = mod->set + i;
        size_t name_len = strlen(h->name);
        if (req != NULL && h2o_memis(h->name, name_len, H2O_STRLIT("host"))) {
            req->authority = str(h->value);
            continue;
        }
        rm_headers_remove(headers, h->name, name_len);
        rm_headers_add(pool, headers, h2o_iovec_init(h->name, name_len), str(h->value));
    }
    for (size_t i = 0; i != mod->num_add; ++i)
        rm_headers_add(pool, headers, str(mod->add[i].name), str(mod->add[i].value));
    for (size_t i = 0; i != mod->num_remove; ++i)
        rm_headers_remove(headers, mod->remove[i], strlen(mod->remove[i]));
}

static rm_filter_status_t
header_rewrite_on_request_head(rm_stream_t *s, void *state)
{
    const rm_config_header_mod_t *mod = s->route->request_headers;
    if (mod != NULL && !is_empty(mod))
        apply(&s->pool, mod, &s->req.headers, &s->req);
    return RM_FILTER_CONTINUE;
}

static void
header_rewrite_on_response_head(rm_stream_t *s, void *state)
{
    /* a local reply answered before routing (no route) has nothing to apply */
    if (s->route == NULL)
        return;
    const rm_config_header_mod_t *mod = s->route->response_headers;
    if (mod != NULL && !is_empty(mod))
        apply(&s->pool, mod, &s->resp.headers, NULL);
}

const rm_filter_t rm_header_rewrite_filter = {
    .name = "header_rewrite",
    .on_request_head = header_rewrite_on_request_head,
    .on_response_head = header_rewrite_on_response_head,
};
