# The application frozen into every firmware image: each board's manifest includes this file,
# so what is frozen is the same on the ESP32, the 32-bit virtual board and the bare-metal build.
# Paths are relative to this file (MicroPython's manifest tools run it from its folder).
include("$(MPY_DIR)/extmod/asyncio")

package("firmware", base_path="..")
package("crypto", base_path="..")
package("offline_cache", base_path="..")
