// libFuzzer target for config.json (model/config.h): arbitrary text parsed; an accepted config is written
// back (config_to_json) and must parse again to the same sizes. Only a stapo::Error may stop it; a config
// that round-trips to other values aborts (a bug). Built and run by dev/fuzz/run.sh.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/error.h"   // defines: Error
#include "model/config.h"   // defines: config_parse, config_to_json

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  stapo::ModelConfig config;
  try {
    config = stapo::config_parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz/config.json");
  } catch (const stapo::Error&) {
    return 0;
  }
  const stapo::ModelConfig again = stapo::config_parse(stapo::config_to_json(config, "float32"), "written.json");
  if (again.vocab_size != config.vocab_size || again.hidden_size != config.hidden_size ||
      again.num_hidden_layers != config.num_hidden_layers || again.head_dim != config.head_dim ||
      again.rope_theta != config.rope_theta || again.sliding_window != config.sliding_window)
    abort();
  return 0;
}
