# The reader link's receive buffer (board/virtual.py `_RxBuffer`): on the unix32 image it is
# `vboard.RxBuffer`, outside the MicroPython heap as the ESP32's UART ring is; elsewhere a
# bytearray. Either way the ReaderUART sees RX_BYTES writable bytes.
import gc


def _has_c_buffer():
    try:
        import vboard  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_buffer_is_rx_bytes_of_writable_memory():
    from board.virtual import RX_BYTES, _RxBuffer

    buf = _RxBuffer(RX_BYTES)
    view = memoryview(buf)
    assert len(buf) == RX_BYTES and len(view) == RX_BYTES
    view[RX_BYTES - 3:] = b"abc"
    view[:3] = view[RX_BYTES - 3:]
    assert bytes(view[:3]) == b"abc" and bytes(memoryview(buf)[:3]) == b"abc"


def test_on_the_image_the_buffer_takes_no_heap_beyond_its_object():
    from board.virtual import RX_BYTES, _RxBuffer

    gc.collect()
    before = gc.mem_alloc()
    buf = _RxBuffer(RX_BYTES)
    gc.collect()
    took = gc.mem_alloc() - before
    if _has_c_buffer():
        assert took <= 32, took  # the object only: the bytes are the C library's
    else:
        assert took >= RX_BYTES, took
    assert len(buf) == RX_BYTES


def test_c_buffer_sizes_are_bounded():
    if not _has_c_buffer():
        return
    import vboard

    for bad in (0, -1, 65537):
        try:
            vboard.RxBuffer(bad)
        except ValueError:
            continue
        raise AssertionError("RxBuffer(%d) was accepted" % bad)
