// The trainer's run directory (--out) and what a checkpoint remembers of the run, so that runs are never
// mixed by accident: one run at a time in a folder (a lock), a fresh run never writes over an earlier one
// unless --overwrite, and a resumed run refuses settings its results depend on that differ from the
// checkpoint's unless --allow-changed-config. Errors name the folder, the file, the key or the flag.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/file_io.h"    // defines: DirLock
#include "data/pair_loader.h"  // defines: PairLoaderConfig
#include "train/trainer.h"     // defines: TrainerConfig

namespace stapo {

// Creates and locks out_dir (held while the returned lock lives). A folder holding an earlier run's log or
// checkpoints is refused unless `resuming` (the run continues there) or `overwrite` (they are removed first).
// out_dir must not be one of `inputs` (the model, the shards, the checkpoint resumed from).
std::unique_ptr<DirLock> run_dir_open(const std::string& out_dir, const std::vector<std::string>& inputs,
                                      bool resuming, bool overwrite);

// The settings a run's results depend on, by flag name ("--batch-size": 8, "--beta": 2, ...): saved in every
// checkpoint's trainer_state.json as "settings".
nlohmann::ordered_json run_settings(const TrainerConfig& trainer, const PairLoaderConfig& loader, int64_t total_steps);

// Compares the settings saved in `checkpoint_dir`/trainer_state.json with this run's: every difference is
// listed in one error unless allow_changed (then they are printed as a warning). A checkpoint of an older
// stapo without settings is accepted with a warning.
void run_settings_check(const std::string& checkpoint_dir, const nlohmann::ordered_json& now, bool allow_changed);

// A field of a trainer state (or any JSON file), with an error naming the file and the key when it is
// missing or of another type.
template <typename T>
T state_field(const nlohmann::json& state, const char* key, const std::string& path) {
  STAPO_CHECK(state.is_object() && state.contains(key), path, ": key \"", key, "\" is missing (corrupt trainer state)");
  try {
    return state.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail(path, ": key \"", key, "\" is ", state.at(key).dump(), ", of the wrong type (corrupt trainer state)");
  }
}

nlohmann::json trainer_state_read(const std::string& checkpoint_dir);  // its trainer_state.json, errors naming it

}  // namespace stapo
