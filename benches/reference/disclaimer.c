/* Reference milter for markgate's benchmarks: adds one header and replaces the body with
 * the body plus a two-line disclaimer.
 *
 * This is the least a labelling milter does per message, written the way a careful libmilter
 * milter is: the body is collected in a growing buffer per message (freed at ABORT/EOM/close),
 * and replaced in one smfi_replacebody call (libmilter splits it into 64 KiB packets).
 * Build: cc -O2 -o disclaimer disclaimer.c -lmilter -lpthread
 * Run:   ./disclaimer unix:/tmp/disclaimer.sock   (or inet:PORT@127.0.0.1) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libmilter/mfapi.h>

static const char DISCLAIMER[] =
	"\r\n-- \r\n"
	"This message has been scanned and labelled by the gateway.\r\n"
	"Communications with this organisation may be monitored or recorded.\r\n";

struct body {
	unsigned char *data;
	size_t len, cap;
};

static struct body *body_of(SMFICTX *ctx)
{
	struct body *b = smfi_getpriv(ctx);

	if (b == NULL) {
		b = calloc(1, sizeof *b);
		if (b != NULL)
			smfi_setpriv(ctx, b);
	}
	return b;
}

static void release(SMFICTX *ctx)
{
	struct body *b = smfi_getpriv(ctx);

	if (b != NULL) {
		free(b->data);
		free(b);
		smfi_setpriv(ctx, NULL);
	}
}

static int append(struct body *b, const unsigned char *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		unsigned char *d;

		while (cap < b->len + n)
			cap *= 2;
		d = realloc(b->data, cap);
		if (d == NULL)
			return -1;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static sfsistat on_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	struct body *b = body_of(ctx);

	if (b == NULL || append(b, chunk, len) != 0)
		return SMFIS_TEMPFAIL;
	return SMFIS_CONTINUE;
}

static sfsistat on_eom(SMFICTX *ctx)
{
	struct body *b = body_of(ctx);
	sfsistat r = SMFIS_CONTINUE;

	if (b == NULL || append(b, (const unsigned char *)DISCLAIMER, sizeof DISCLAIMER - 1) != 0)
		r = SMFIS_TEMPFAIL;
	else if (smfi_addheader(ctx, "X-Reference-Label", "OFFICIAL") != MI_SUCCESS ||
		 smfi_replacebody(ctx, b->data, (int)b->len) != MI_SUCCESS)
		r = SMFIS_TEMPFAIL;
	release(ctx);
	return r;
}

static sfsistat on_abort(SMFICTX *ctx)
{
	release(ctx);
	return SMFIS_CONTINUE;
}

static sfsistat on_close(SMFICTX *ctx)
{
	release(ctx);
	return SMFIS_CONTINUE;
}

int main(int argc, char **argv)
{
	struct smfiDesc desc;

	if (argc != 2) {
		fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
		return 2;
	}
	memset(&desc, 0, sizeof desc);
	desc.xxfi_name = "markgate-bench-disclaimer";
	desc.xxfi_version = SMFI_VERSION;
	desc.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGBODY;
	desc.xxfi_body = on_body;
	desc.xxfi_eom = on_eom;
	desc.xxfi_abort = on_abort;
	desc.xxfi_close = on_close;
	if (strncmp(argv[1], "unix:", 5) == 0)
		unlink(argv[1] + 5);
	if (smfi_setconn(argv[1]) != MI_SUCCESS || smfi_setbacklog(1024) != MI_SUCCESS ||
	    smfi_register(desc) != MI_SUCCESS) {
		fprintf(stderr, "cannot set up the milter\n");
		return 1;
	}
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
