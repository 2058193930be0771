/*
 * Fuzz target for the CSR the control plane signs (control/src/ca.c, rm_ca_issue, reached by the Certify RPC of
 * control/src/identity.c with the agent's DER PKCS#10 request of at most 4096 bytes): the input is the CSR.
 *
 * A CA is generated once, at the first input, in a temporary directory removed at exit. Besides "no crash, no leak,
 * no UB" it checks, for any input: rm_ca_issue answers 0 (then with a leaf certificate that parses and carries the
 * CSR's public key) or -1 (a bad CSR, with a reason), never -2 (an internal failure caused by peer bytes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include "ca.h"
#include "fuzz_common.h"

/* identity.c refuses larger CSRs before they reach the CA */
#define MAX_CSR_BYTES 4096

static char dir[64];
static rm_ca_t *ca;

static void
cleanup(void)
{
    static const char *const files[] = {"trust-anchor.pem", "trust-anchor.key", "issuer.pem", "issuer.key"};
    char path[128];
    rm_ca_destroy(ca);
    for (size_t i = 0; i != sizeof(files) / sizeof(files[0]); ++i) {
        snprintf(path, sizeof(path), "%s/ca/%s", dir, files[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/ca", dir);
    rmdir(path);
    rmdir(dir);
}

static void
setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/remora-fuzz-csr-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
    char err[512];
    rm_ca_options_t opts = {.state_dir = dir};
    if ((ca = rm_ca_open(&opts, err, sizeof(err))) == NULL) {
        fprintf(stderr, "fuzz_csr: %s\n", err);
        abort();
    }
    atexit(cleanup);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (ca == NULL)
        setup();
    if (size > MAX_CSR_BYTES)
        return 0;
    uint8_t *leaf = NULL;
    size_t leaf_len = 0;
    int64_t not_after = 0;
    char err[512] = "";
    int rv = rm_ca_issue(ca, data, size, "fuzz-ns", "fuzz-sa", &leaf, &leaf_len, &not_after, err, sizeof(err));
    if (rv == -2)
        fprintf(stderr, "fuzz_csr: internal failure: %s\n", err);
    FUZZ_CHECK(rv == 0 || rv == -1, "a CSR is signed or refused as bad");
    if (rv == -1) {
        FUZZ_CHECK(err[0] != '\0', "a refusal says why");
        return 0;
    }
    const unsigned char *p = leaf;
    X509 *cert = d2i_X509(NULL, &p, (long)leaf_len);
    FUZZ_CHECK(cert != NULL && p == leaf + leaf_len, "the leaf parses");
    p = data;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)size);
    FUZZ_CHECK(req != NULL, "a signed CSR parses");
    EVP_PKEY *a = X509_get0_pubkey(cert), *b = X509_REQ_get0_pubkey(req);
    FUZZ_CHECK(a != NULL && b != NULL && EVP_PKEY_eq(a, b) == 1, "the leaf carries the CSR's key");
    X509_REQ_free(req);
    X509_free(cert);
    free(leaf);
    return 0;
}
