# aes128 (board/cmodules/aes128/modaes128.c): AES-128 CBC with the key schedule on the C
# stack, no heap object per key.
SRC_USERMOD_C += $(USERMOD_DIR)/../../../cmodules/aes128/modaes128.c
