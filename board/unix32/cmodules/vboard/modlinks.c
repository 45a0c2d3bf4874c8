// The virtual board's two host links in C, for the unix32 image (board/virtual.py):
//
//   vboard.ReaderLink(port)   the PN532 UART: a TCP port on 127.0.0.1 that one host emulator
//                             connects to. A stream (read, readinto, write) that asyncio polls
//                             through its file number, plus any(), reset_input(), connected().
//   vboard.IOHub(port)        the virtual door's I/O channel (docs/virtual-device.md): a TCP
//                             port on 127.0.0.1 for up to HUB_CLIENTS host clients speaking
//                             JSON lines. serve() answers what the sockets hold, pin(name)
//                             gives the firmware an input (read) or an output (set, value),
//                             and the launcher sets status_provider.
//
// Why C: on an ESP32 the reader is a UART whose driver keeps its ring in the IDF heap, and
// there is no I/O channel at all. In Python the links (two asyncio servers, each client's
// stream, task and queue, the channel's classes and pins) took 2.2 KiB of the MicroPython heap
// this image is built to measure (docs/architecture.md). Here they take a few small objects;
// bytes wait in the kernel's socket buffers and in buffers from the C library's heap.
//
// No threads: each object's file number is an epoll descriptor over its sockets, so asyncio's
// poller wakes the one Python task that calls serve(), or the reader that reads, when anything
// happens. All sockets are non-blocking; nothing here waits except a write to an emulator
// whose socket buffer is full (200 ms, then it is taken as gone).

#ifndef _GNU_SOURCE
#define _GNU_SOURCE  // accept4
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "py/runtime.h"
#include "py/stream.h"
#include "py/mperrno.h"
#include "py/mphal.h"
#include "py/smallint.h"

extern const mp_obj_type_t vboard_pin_type;

#define HUB_CLIENTS 8
#define LINE_MAX_BYTES 4096     // a request line; a longer one ends that client's connection
#define OUTBOX_BYTES 65536      // lines queued for a client that does not read; the oldest go

// A descriptor held back for the moment the process has none left (EMFILE, or ENFILE for the
// system): accept() then fails and leaves the connection waiting, the listening socket stays
// readable and the task that polls it spins. One for both links: accept_one() lends it.
static int reserve_fd = -1;

static int listen_on(mp_int_t port) {
    if (reserve_fd < 0) {
        reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        mp_raise_OSError(errno);
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 8) < 0) {
        int err = errno;
        close(fd);
        mp_raise_OSError(err);
    }
    return fd;
}

static int new_epoll(void) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        mp_raise_OSError(errno);
    }
    return ep;
}

static void watch(int ep, int fd, uint32_t events, int op) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.fd = fd;
    epoll_ctl(ep, op, fd, &ev);
}

static void close_fd(int *fd) {
    if (*fd >= 0) {
        close(*fd);  // also leaves every epoll set
        *fd = -1;
    }
}

// A request/response stream: without TCP_NODELAY a small write waits for the peer's delayed
// ACK (~40 ms on loopback). Out of descriptors, each waiting connection is taken with the
// reserve's and closed at once (the host sees it closed), so the listening socket is readable
// again only for a new one; -1 when none waits.
static int accept_one(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            return fd;
        }
        if ((errno != EMFILE && errno != ENFILE) || reserve_fd < 0) {
            return -1;
        }
        close_fd(&reserve_fd);
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            close(fd);
        }
        reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return -1;
        }
    }
}

static mp_uint_t fd_poll(int fd, mp_uint_t want) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return (want & MP_STREAM_POLL_RD) && poll(&p, 1, 0) > 0 ? MP_STREAM_POLL_RD : 0;
}

// The stream ioctl of both links: asyncio polls the epoll descriptor; close_obj is the type's
// close method.
static mp_uint_t ep_ioctl(mp_obj_t self_in, int ep, mp_obj_t (*close_obj)(mp_obj_t), mp_uint_t request, uintptr_t arg, int *errcode) {
    switch (request) {
        case MP_STREAM_GET_FILENO:
            return ep;
        case MP_STREAM_POLL:
            return ep >= 0 ? fd_poll(ep, arg) : 0;
        case MP_STREAM_CLOSE:
            close_obj(self_in);
            return 0;
        default:
            *errcode = MP_EINVAL;
            return MP_STREAM_ERROR;
    }
}

// ---- ReaderLink -------------------------------------------------------------------------------

typedef struct {
    mp_obj_base_t base;
    int lfd;    // listening
    int cfd;    // the connected emulator, or -1
    int ep;     // epoll over both: the file number asyncio polls
} link_obj_t;

// The held emulator closed its end (its FIN may wait unread behind bytes nobody asked for).
static bool peer_gone(int fd) {
    struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

// Take a waiting connection: the emulator held is kept and any other closed at once, unless
// the held one has gone: a host that reconnects between two reads of the card task must find
// the new emulator taken, not refused because the old one's end was not read yet.
static void link_accept(link_obj_t *self) {
    if (self->lfd < 0) {
        return;
    }
    for (;;) {
        int fd = accept_one(self->lfd);
        if (fd < 0) {
            return;
        }
        if (self->cfd >= 0 && peer_gone(self->cfd)) {
            close_fd(&self->cfd);  // unplugged: what it sent last goes with it
        }
        if (self->cfd >= 0) {
            close(fd);  // one emulator at a time
            continue;
        }
        self->cfd = fd;
        watch(self->ep, fd, EPOLLIN, EPOLL_CTL_ADD);
    }
}

static mp_obj_t link_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, 1, false);
    link_obj_t *self = mp_obj_malloc_with_finaliser(link_obj_t, type);
    self->lfd = self->cfd = self->ep = -1;
    self->lfd = listen_on(mp_obj_get_int(args[0]));
    self->ep = new_epoll();
    watch(self->ep, self->lfd, EPOLLIN, EPOLL_CTL_ADD);
    return MP_OBJ_FROM_PTR(self);
}

// Nothing to read is EAGAIN, so asyncio waits again: also when the emulator went away (a UART
// whose peer is unplugged reads nothing; a new emulator is taken on the next wake).
static mp_uint_t link_read(mp_obj_t self_in, void *buf, mp_uint_t size, int *errcode) {
    link_obj_t *self = MP_OBJ_TO_PTR(self_in);
    link_accept(self);
    if (self->cfd >= 0 && size > 0) {
        ssize_t n = recv(self->cfd, buf, size, MSG_DONTWAIT);
        if (n > 0) {
            return n;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            close_fd(&self->cfd);
        }
    }
    *errcode = MP_EAGAIN;
    return MP_STREAM_ERROR;
}

// All of it or none: a frame half sent is a frame the PN532 drops. Without an emulator the
// bytes go nowhere and 0 is returned, as before the link existed.
static mp_uint_t link_write(mp_obj_t self_in, const void *buf, mp_uint_t size, int *errcode) {
    link_obj_t *self = MP_OBJ_TO_PTR(self_in);
    (void)errcode;
    link_accept(self);
    const uint8_t *p = buf;
    mp_uint_t left = size;
    while (self->cfd >= 0 && left > 0) {
        ssize_t n = send(self->cfd, p, left, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            left -= n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd w = { .fd = self->cfd, .events = POLLOUT };
            if (poll(&w, 1, 200) <= 0) {
                close_fd(&self->cfd);  // an emulator that reads nothing is gone
            }
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            close_fd(&self->cfd);
        }
    }
    return self->cfd >= 0 ? size : 0;
}

static void link_close(link_obj_t *self) {
    close_fd(&self->cfd);
    close_fd(&self->lfd);
    close_fd(&self->ep);
}

static mp_obj_t link_any(mp_obj_t self_in) {
    link_obj_t *self = MP_OBJ_TO_PTR(self_in);
    link_accept(self);
    int n = 0;
    if (self->cfd >= 0 && ioctl(self->cfd, FIONREAD, &n) < 0) {
        n = 0;
    }
    return MP_OBJ_NEW_SMALL_INT(n);
}
static MP_DEFINE_CONST_FUN_OBJ_1(link_any_obj, link_any);

static mp_obj_t link_reset_input(mp_obj_t self_in) {
    link_obj_t *self = MP_OBJ_TO_PTR(self_in);
    link_accept(self);
    uint8_t junk[256];
    while (self->cfd >= 0 && recv(self->cfd, junk, sizeof(junk), MSG_DONTWAIT) > 0) {
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(link_reset_input_obj, link_reset_input);

static mp_obj_t link_connected(mp_obj_t self_in) {
    link_obj_t *self = MP_OBJ_TO_PTR(self_in);
    link_accept(self);
    return mp_obj_new_bool(self->cfd >= 0);
}
static MP_DEFINE_CONST_FUN_OBJ_1(link_connected_obj, link_connected);

static mp_obj_t link_del(mp_obj_t self_in) {
    link_close(MP_OBJ_TO_PTR(self_in));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(link_del_obj, link_del);

static mp_uint_t link_ioctl(mp_obj_t self_in, mp_uint_t request, uintptr_t arg, int *errcode) {
    link_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return ep_ioctl(self_in, self->ep, link_del, request, arg, errcode);
}

static const mp_rom_map_elem_t link_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_read), MP_ROM_PTR(&mp_stream_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_readinto), MP_ROM_PTR(&mp_stream_readinto_obj) },
    { MP_ROM_QSTR(MP_QSTR_write), MP_ROM_PTR(&mp_stream_write_obj) },
    { MP_ROM_QSTR(MP_QSTR_any), MP_ROM_PTR(&link_any_obj) },
    { MP_ROM_QSTR(MP_QSTR_reset_input), MP_ROM_PTR(&link_reset_input_obj) },
    { MP_ROM_QSTR(MP_QSTR_connected), MP_ROM_PTR(&link_connected_obj) },
    { MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&link_del_obj) },
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&link_del_obj) },
};
static MP_DEFINE_CONST_DICT(link_locals, link_locals_table);

static const mp_stream_p_t link_stream_p = {
    .read = link_read,
    .write = link_write,
    .ioctl = link_ioctl,
};

MP_DEFINE_CONST_OBJ_TYPE(
    vboard_readerlink_type, MP_QSTR_ReaderLink, MP_TYPE_FLAG_ITER_IS_STREAM,
    make_new, link_make_new,
    protocol, &link_stream_p,
    locals_dict, &link_locals
    );

// ---- IOHub: the I/O channel -------------------------------------------------------------------
//
// The protocol of docs/virtual-device.md, as board/vdev/pylinks.py IOChannel speaks it for the
// PyPI interpreter (the same tests run against both): requests are JSON lines, parsed with the
// json module's loads; replies and notifications are written from C into each client's queue,
// so a status report (~800 bytes of JSON) needs no string in the MicroPython heap.

static const qstr input_names[] = { MP_QSTR_door_contact, MP_QSTR_rex, MP_QSTR_tamper, MP_QSTR_fire, MP_QSTR_power };
static const qstr output_names[] = { MP_QSTR_relay, MP_QSTR_buzzer, MP_QSTR_led };
static const qstr contact_states[] = { MP_QSTR_closed, MP_QSTR_open, MP_QSTR_short, MP_QSTR_cut };
#define N_INPUTS MP_ARRAY_SIZE(input_names)
#define N_OUTPUTS MP_ARRAY_SIZE(output_names)

typedef struct {
    int fd;             // -1: a free slot
    char *in;           // received, up to LINE_MAX_BYTES
    size_t in_len;
    char *out;          // queued to send, up to OUTBOX_BYTES
    size_t out_len;
    bool out_watched;   // EPOLLOUT asked for
} hub_client_t;

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
    bool failed;        // the C library's heap said no
} text_t;

typedef struct {
    mp_obj_base_t base;
    int lfd;
    int ep;
    hub_client_t *c;    // HUB_CLIENTS of them, from the C library's heap
    text_t text;        // the reply being written
    text_t note;        // the notification being written (one may be sent during a reply)
    mp_obj_t inputs[N_INPUTS];
    mp_obj_t outputs[N_OUTPUTS];
    mp_obj_t status_provider;   // set by the launcher: () -> the firmware's status dict
    mp_obj_t loads;             // json.loads
} hub_obj_t;

typedef struct {
    mp_obj_base_t base;
    hub_obj_t *hub;
    uint8_t output;     // 1: an output (set, value), 0: an input (read)
    uint8_t index;
} pin_obj_t;

static void text_strn(void *env, const char *str, size_t len) {
    text_t *t = env;
    if (t->len + len > t->cap) {
        size_t cap = (t->len + len) * 2 + 256;
        char *buf = realloc(t->buf, cap);
        if (buf == NULL) {
            t->failed = true;
            return;
        }
        t->buf = buf;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, str, len);
    t->len += len;
}

static void client_drop(hub_client_t *c) {
    close_fd(&c->fd);
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->out_len = 0;
    c->out_watched = false;
}

static void client_flush(hub_obj_t *self, hub_client_t *c) {
    size_t sent = 0;
    while (c->fd >= 0 && sent < c->out_len) {
        ssize_t n = send(c->fd, c->out + sent, c->out_len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            sent += n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            client_drop(c);
            return;
        }
    }
    memmove(c->out, c->out + sent, c->out_len - sent);
    c->out_len -= sent;
    bool want = c->out_len > 0;
    if (want != c->out_watched) {
        watch(self->ep, c->fd, want ? EPOLLIN | EPOLLOUT : EPOLLIN, EPOLL_CTL_MOD);
        c->out_watched = want;
    }
}

// Queue a line (text + "\n") for one client. When it does not fit, whole lines go from the
// front, after the first (it may be half sent already): a client that stopped reading loses
// its oldest notifications, never a part of one.
static void client_queue(hub_obj_t *self, hub_client_t *c, const char *text, size_t len) {
    if (c->fd < 0 || len + 1 > OUTBOX_BYTES / 2) {
        return;
    }
    if (c->out_len + len + 1 > OUTBOX_BYTES) {
        char *first_end = memchr(c->out, '\n', c->out_len);
        size_t keep_head = first_end ? (size_t)(first_end - c->out) + 1 : c->out_len;
        size_t cut = keep_head;
        while (c->out_len - (cut - keep_head) + len + 1 > OUTBOX_BYTES && cut < c->out_len) {
            char *e = memchr(c->out + cut, '\n', c->out_len - cut);
            cut = e ? (size_t)(e - c->out) + 1 : c->out_len;
        }
        memmove(c->out + keep_head, c->out + cut, c->out_len - cut);
        c->out_len -= cut - keep_head;
    }
    memcpy(c->out + c->out_len, text, len);
    c->out[c->out_len + len] = '\n';
    c->out_len += len + 1;
    client_flush(self, c);
}

static void hub_accept(hub_obj_t *self) {
    for (;;) {
        int fd = accept_one(self->lfd);
        if (fd < 0) {
            return;
        }
        hub_client_t *c = NULL;
        for (int i = 0; i < HUB_CLIENTS; i++) {
            if (self->c[i].fd < 0) {
                c = &self->c[i];
                break;
            }
        }
        char *in = c ? malloc(LINE_MAX_BYTES) : NULL;
        char *out = c ? malloc(OUTBOX_BYTES) : NULL;
        if (c == NULL || in == NULL || out == NULL) {
            free(in);
            free(out);
            close(fd);  // full: the host sees the connection closed
            continue;
        }
        c->fd = fd;
        c->in = in;
        c->out = out;
        watch(self->ep, fd, EPOLLIN, EPOLL_CTL_ADD);
    }
}

static bool has_line(const hub_client_t *c) {
    return c->fd >= 0 && memchr(c->in, '\n', c->in_len) != NULL;
}

// Everything the sockets have for us: new clients, received bytes (up to a whole line per
// client), queued lines sent.
static void hub_poll_sockets(hub_obj_t *self) {
    hub_accept(self);
    for (int i = 0; i < HUB_CLIENTS; i++) {
        hub_client_t *c = &self->c[i];
        if (c->fd < 0) {
            continue;
        }
        if (c->out_len) {
            client_flush(self, c);
        }
        while (c->fd >= 0 && !has_line(c)) {
            if (c->in_len == LINE_MAX_BYTES) {
                client_drop(c);  // no line that long is a request
                break;
            }
            ssize_t n = recv(c->fd, c->in + c->in_len, LINE_MAX_BYTES - c->in_len, MSG_DONTWAIT);
            if (n > 0) {
                c->in_len += n;
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else {
                if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
                    client_drop(c);
                }
                break;
            }
        }
    }
}

static mp_uint_t ticks(void) {
    return mp_hal_ticks_ms() & (MICROPY_PY_TIME_TICKS_PERIOD - 1);
}

static void put(hub_obj_t *self, const char *s) {
    text_strn(&self->text, s, strlen(s));
}

// As json.dumps writes it (its default separators: the JSON printers read them from an
// mp_print_ext_t).
static void put_json(hub_obj_t *self, mp_obj_t obj) {
    mp_print_ext_t p = { { &self->text, text_strn }, ", ", ": " };
    mp_obj_print_helper(&p.base, obj, PRINT_JSON);
}

static void put_ticks(hub_obj_t *self) {
    mp_print_t p = { &self->text, text_strn };
    mp_printf(&p, ", \"t\": %u", (unsigned)ticks());
}

static void put_names(hub_obj_t *self, const qstr *names, const mp_obj_t *values, size_t n) {
    for (size_t k = 0; k < n; k++) {
        put(self, k ? ", \"" : "{\"");
        put(self, qstr_str(names[k]));
        put(self, "\": ");
        put_json(self, values[k]);
    }
    put(self, "}");
}

static void put_error(hub_obj_t *self, mp_obj_t why) {
    put(self, "{\"ok\": false, \"error\": ");
    put_json(self, why);
}

static void put_error_c(hub_obj_t *self, const char *why) {  // why: plain text, nothing to escape
    put(self, "{\"ok\": false, \"error\": \"");
    put(self, why);
    put(self, "\"");
}

// A notification to every client: {"ev": kind, "name": name, "value": value, "t": ticks}.
static void hub_emit(hub_obj_t *self, qstr kind, qstr name, mp_obj_t value) {
    text_t reply = self->text;
    self->text = self->note;
    self->text.len = 0;
    self->text.failed = false;
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        put(self, "{\"ev\": \"");
        put(self, qstr_str(kind));
        put(self, "\", \"name\": \"");
        put(self, qstr_str(name));
        put(self, "\", \"value\": ");
        put_json(self, value);  // may raise (an object whose repr fails)
        put_ticks(self);
        put(self, "}");
        for (int i = 0; !self->text.failed && i < HUB_CLIENTS; i++) {
            client_queue(self, &self->c[i], self->text.buf, self->text.len);
        }
        nlr_pop();
    } else {
        self->note = self->text;  // the two buffers apart again, then the exception goes on
        self->text = reply;
        nlr_jump(nlr.ret_val);
    }
    self->note = self->text;
    self->text = reply;
}

static mp_obj_t field(mp_obj_t dict, qstr key) {
    mp_map_elem_t *e = mp_map_lookup(mp_obj_dict_get_map(dict), MP_OBJ_NEW_QSTR(key), MP_MAP_LOOKUP);
    return e ? e->value : mp_const_none;
}

static bool is(mp_obj_t obj, qstr q) {
    return mp_obj_is_str(obj) && mp_obj_equal(obj, MP_OBJ_NEW_QSTR(q));
}

static int index_of(mp_obj_t name, const qstr *names, size_t n) {
    for (size_t k = 0; k < n; k++) {
        if (is(name, names[k])) {
            return k;
        }
    }
    return -1;
}

static void answer_set(hub_obj_t *self, mp_obj_t msg) {
    mp_obj_t name = field(msg, MP_QSTR_name);
    mp_obj_t value = field(msg, MP_QSTR_value);
    int k = index_of(name, input_names, N_INPUTS);
    if (k < 0) {
        vstr_t v;
        mp_print_t p;
        vstr_init_print(&v, 32, &p);
        mp_print_str(&p, "unknown input ");
        mp_obj_print_helper(&p, name, PRINT_STR);
        put_error(self, mp_obj_new_str_from_vstr(&v));
        return;
    }
    if (k == 0) {
        int state = index_of(value, contact_states, MP_ARRAY_SIZE(contact_states));
        if (state < 0) {
            put_error_c(self, "door_contact is one of closed/open/short/cut");
            return;
        }
        value = MP_OBJ_NEW_QSTR(contact_states[state]);
    } else if (!mp_obj_is_bool(value)) {
        vstr_t v;
        mp_print_t p;
        vstr_init_print(&v, 32, &p);
        mp_printf(&p, "%q takes true or false", input_names[k]);
        put_error(self, mp_obj_new_str_from_vstr(&v));
        return;
    }
    self->inputs[k] = value;
    hub_emit(self, MP_QSTR_in, input_names[k], value);  // the notification, then this reply
    put(self, "{\"ok\": true");
    put_ticks(self);
}

static void answer_status(hub_obj_t *self, mp_obj_t msg) {
    mp_obj_t st = self->status_provider != mp_const_none ? mp_call_function_0(self->status_provider) : mp_const_none;
    mp_obj_t keys = field(msg, MP_QSTR_keys);
    if (keys != mp_const_none) {
        // Only these: a host asking after every card (the soak) needs two figures, not the
        // whole report.
        bool bad = !mp_obj_is_type(keys, &mp_type_list);
        size_t n = 0;
        mp_obj_t *items = NULL;
        if (!bad) {
            mp_obj_list_get(keys, &n, &items);
            for (size_t k = 0; k < n; k++) {
                bad |= !mp_obj_is_str(items[k]);
            }
        }
        if (bad) {
            put_error_c(self, "keys is a list of status names");
            return;
        }
        put(self, "{\"ok\": true, \"status\": {");
        size_t shown = 0;
        if (mp_obj_is_type(st, &mp_type_dict)) {
            mp_map_t *map = mp_obj_dict_get_map(st);
            for (size_t k = 0; k < n; k++) {
                bool again = false;  // a key asked twice is answered once, as a dict has it
                for (size_t j = 0; j < k && !again; j++) {
                    again = mp_obj_equal(items[j], items[k]);
                }
                mp_map_elem_t *e = again ? NULL : mp_map_lookup(map, items[k], MP_MAP_LOOKUP);
                if (e != NULL) {
                    put(self, shown++ ? ", " : "");
                    put_json(self, items[k]);
                    put(self, ": ");
                    put_json(self, e->value);
                }
            }
        }
        put(self, "}");
    } else {
        put(self, "{\"ok\": true, \"status\": ");
        if (st == mp_const_none) {
            put(self, "{}");
        } else {
            put_json(self, st);
        }
    }
    put_ticks(self);
}

// One request: the reply (without its "re" and closing brace) is left in self->text.
static void answer(hub_obj_t *self, mp_obj_t msg) {
    if (!mp_obj_is_type(msg, &mp_type_dict)) {
        put(self, "{\"ok\": false");
        return;
    }
    mp_obj_t op = field(msg, MP_QSTR_op);
    if (is(op, MP_QSTR_set)) {
        answer_set(self, msg);
    } else if (is(op, MP_QSTR_get)) {
        put(self, "{\"ok\": true, \"inputs\": ");
        put_names(self, input_names, self->inputs, N_INPUTS);
        put(self, ", \"outputs\": ");
        put_names(self, output_names, self->outputs, N_OUTPUTS);
        put_ticks(self);
    } else if (is(op, MP_QSTR_status)) {
        answer_status(self, msg);
    } else {
        put_error_c(self, "unknown op");
    }
}

static void handle_line(hub_obj_t *self, hub_client_t *c, size_t len) {
    self->text.len = 0;
    self->text.failed = false;
    mp_obj_t reraise = MP_OBJ_NULL;
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_obj_t msg = MP_OBJ_NULL;
        nlr_buf_t parse;
        if (nlr_push(&parse) == 0) {
            msg = mp_call_function_1(self->loads, mp_obj_new_memoryview('B', len, c->in));
            nlr_pop();
        } else if (mp_obj_is_subclass_fast(MP_OBJ_FROM_PTR(((mp_obj_base_t *)parse.ret_val)->type),
            MP_OBJ_FROM_PTR(&mp_type_ValueError))) {
            put_error_c(self, "not JSON");
        } else {
            nlr_jump(parse.ret_val);
        }
        if (msg != MP_OBJ_NULL) {
            answer(self, msg);
        }
        nlr_pop();
    } else {
        // Whatever failed (a MemoryError in a tight heap, a status the json module cannot
        // write) is the answer: the client is told, the channel carries on.
        const mp_obj_type_t *type = mp_obj_get_type(MP_OBJ_FROM_PTR(nlr.ret_val));
        if (!mp_obj_is_subclass_fast(MP_OBJ_FROM_PTR(type), MP_OBJ_FROM_PTR(&mp_type_Exception))) {
            reraise = MP_OBJ_FROM_PTR(nlr.ret_val);  // KeyboardInterrupt, SystemExit: not ours
        }
        self->text.len = 0;
        self->text.failed = false;
        put_error(self, MP_OBJ_NEW_QSTR(type->name));
    }
    if (self->c == NULL) {  // closed meanwhile (by a status provider): nothing to answer
        if (reraise != MP_OBJ_NULL) {
            nlr_raise(reraise);
        }
        return;
    }
    if (c->fd >= 0) {  // the client may have gone meanwhile (a send that failed dropped it)
        memmove(c->in, c->in + len + 1, c->in_len - len - 1);
        c->in_len -= len + 1;
    }
    if (reraise != MP_OBJ_NULL) {
        nlr_raise(reraise);
    }
    put(self, ", \"re\": true}");
    if (self->text.failed || self->text.len + 1 > OUTBOX_BYTES / 2) {
        bool failed = self->text.failed;  // still one answer: never a request left unanswered
        self->text.len = 0;
        self->text.failed = false;
        put_error_c(self, failed ? "MemoryError" : "reply too long");
        put(self, ", \"re\": true}");
    }
    if (!self->text.failed) {
        client_queue(self, c, self->text.buf, self->text.len);
    }
}

static mp_obj_t hub_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    mp_arg_check_num(n_args, n_kw, 1, 1, false);
    hub_obj_t *self = mp_obj_malloc_with_finaliser(hub_obj_t, type);
    self->lfd = self->ep = -1;
    self->text.buf = self->note.buf = NULL;
    self->text.len = self->text.cap = self->note.len = self->note.cap = 0;
    self->c = calloc(HUB_CLIENTS, sizeof(hub_client_t));
    if (self->c == NULL) {
        mp_raise_type(&mp_type_MemoryError);
    }
    for (int i = 0; i < HUB_CLIENTS; i++) {
        self->c[i].fd = -1;
    }
    self->inputs[0] = MP_OBJ_NEW_QSTR(MP_QSTR_closed);
    self->inputs[1] = self->inputs[2] = self->inputs[3] = mp_const_false;
    self->inputs[4] = mp_const_true;  // mains present
    self->outputs[0] = self->outputs[1] = mp_const_false;
    self->outputs[2] = MP_OBJ_NEW_QSTR(MP_QSTR_off);
    self->status_provider = mp_const_none;
    self->loads = mp_load_attr(mp_import_name(MP_QSTR_json, mp_const_none, MP_OBJ_NEW_SMALL_INT(0)), MP_QSTR_loads);
    self->lfd = listen_on(mp_obj_get_int(args[0]));
    self->ep = new_epoll();
    watch(self->ep, self->lfd, EPOLLIN, EPOLL_CTL_ADD);
    return MP_OBJ_FROM_PTR(self);
}

// serve(): one round: new clients, received bytes, at most one request per client answered.
// True when a whole request still waits (yield, then call again: the file number may not be
// readable for it), False when the next thing to wait for is the file number. A client that
// sends without pause cannot keep the firmware out of the CPU.
static mp_obj_t hub_serve(mp_obj_t self_in) {
    hub_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (self->lfd < 0) {
        return mp_const_false;
    }
    hub_poll_sockets(self);
    for (int i = 0; self->c != NULL && i < HUB_CLIENTS; i++) {
        hub_client_t *c = &self->c[i];
        if (has_line(c)) {
            handle_line(self, c, (char *)memchr(c->in, '\n', c->in_len) - c->in);
        }
    }
    if (self->c == NULL) {
        return mp_const_false;  // closed by a status provider
    }
    hub_poll_sockets(self);
    for (int i = 0; i < HUB_CLIENTS; i++) {
        if (has_line(&self->c[i])) {
            return mp_const_true;
        }
    }
    return mp_const_false;
}
static MP_DEFINE_CONST_FUN_OBJ_1(hub_serve_obj, hub_serve);

static mp_obj_t hub_pin(mp_obj_t self_in, mp_obj_t name) {
    pin_obj_t *pin = mp_obj_malloc(pin_obj_t, &vboard_pin_type);
    pin->hub = MP_OBJ_TO_PTR(self_in);
    int k = index_of(name, input_names, N_INPUTS);
    pin->output = k < 0;
    if (k < 0 && (k = index_of(name, output_names, N_OUTPUTS)) < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("no such pin"));
    }
    pin->index = k;
    return MP_OBJ_FROM_PTR(pin);
}
static MP_DEFINE_CONST_FUN_OBJ_2(hub_pin_obj, hub_pin);

static mp_obj_t hub_clients(mp_obj_t self_in) {
    hub_obj_t *self = MP_OBJ_TO_PTR(self_in);
    int n = 0;
    for (int i = 0; self->c && i < HUB_CLIENTS; i++) {
        n += self->c[i].fd >= 0;
    }
    return MP_OBJ_NEW_SMALL_INT(n);
}
static MP_DEFINE_CONST_FUN_OBJ_1(hub_clients_obj, hub_clients);

static void hub_close(hub_obj_t *self) {
    for (int i = 0; self->c && i < HUB_CLIENTS; i++) {
        client_drop(&self->c[i]);
    }
    free(self->c);
    self->c = NULL;
    free(self->text.buf);
    free(self->note.buf);
    self->text.buf = self->note.buf = NULL;
    self->text.len = self->text.cap = self->note.len = self->note.cap = 0;
    close_fd(&self->lfd);
    close_fd(&self->ep);
}

static mp_obj_t hub_del(mp_obj_t self_in) {
    hub_close(MP_OBJ_TO_PTR(self_in));
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(hub_del_obj, hub_del);

static mp_uint_t hub_ioctl(mp_obj_t self_in, mp_uint_t request, uintptr_t arg, int *errcode) {
    hub_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return ep_ioctl(self_in, self->ep, hub_del, request, arg, errcode);
}

static const mp_rom_map_elem_t hub_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_serve), MP_ROM_PTR(&hub_serve_obj) },
    { MP_ROM_QSTR(MP_QSTR_pin), MP_ROM_PTR(&hub_pin_obj) },
    { MP_ROM_QSTR(MP_QSTR_clients), MP_ROM_PTR(&hub_clients_obj) },
    { MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&hub_del_obj) },
    { MP_ROM_QSTR(MP_QSTR___del__), MP_ROM_PTR(&hub_del_obj) },
};
static MP_DEFINE_CONST_DICT(hub_locals, hub_locals_table);

// status_provider is the one attribute a host sets (board/vdev/boot.py).
static void hub_attr(mp_obj_t self_in, qstr attr, mp_obj_t *dest) {
    hub_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (attr != MP_QSTR_status_provider) {
        dest[1] = MP_OBJ_SENTINEL;  // the methods, from locals_dict
        return;
    }
    if (dest[0] == MP_OBJ_NULL) {
        dest[0] = self->status_provider;
    } else if (dest[0] == MP_OBJ_SENTINEL && dest[1] != MP_OBJ_NULL) {
        self->status_provider = dest[1];
        dest[0] = MP_OBJ_NULL;
    }
}

static const mp_stream_p_t hub_stream_p = {
    .ioctl = hub_ioctl,
};

MP_DEFINE_CONST_OBJ_TYPE(
    vboard_iohub_type, MP_QSTR_IOHub, MP_TYPE_FLAG_NONE,
    make_new, hub_make_new,
    attr, hub_attr,
    protocol, &hub_stream_p,
    locals_dict, &hub_locals
    );

// ---- Pin: one of the channel's inputs or outputs, as the firmware reads and drives it ----------

static mp_obj_t pin_read(mp_obj_t self_in) {
    pin_obj_t *self = MP_OBJ_TO_PTR(self_in);
    return self->output ? self->hub->outputs[self->index] : self->hub->inputs[self->index];
}
static MP_DEFINE_CONST_FUN_OBJ_1(pin_read_obj, pin_read);

// An output notifies the host only when it changes.
static mp_obj_t pin_set(mp_obj_t self_in, mp_obj_t value) {
    pin_obj_t *self = MP_OBJ_TO_PTR(self_in);
    if (!self->output) {
        mp_raise_ValueError(MP_ERROR_TEXT("an input is set by the host"));
    }
    hub_obj_t *hub = self->hub;
    if (!mp_obj_equal(hub->outputs[self->index], value)) {
        hub->outputs[self->index] = value;
        if (hub->c != NULL) {
            hub_emit(hub, MP_QSTR_out, output_names[self->index], value);
        }
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(pin_set_obj, pin_set);

static const mp_rom_map_elem_t pin_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_read), MP_ROM_PTR(&pin_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_value), MP_ROM_PTR(&pin_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_set), MP_ROM_PTR(&pin_set_obj) },
};
static MP_DEFINE_CONST_DICT(pin_locals, pin_locals_table);

MP_DEFINE_CONST_OBJ_TYPE(
    vboard_pin_type, MP_QSTR_Pin, MP_TYPE_FLAG_NONE,
    locals_dict, &pin_locals
    );
