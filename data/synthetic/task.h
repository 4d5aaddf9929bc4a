// The synthetic preference task of the demo (`make demo`): short digit problems whose answers can be
// checked exactly, so that task accuracy and the degeneration rate of greedy generations are measurable.
//
//   add      "37+45="      -> "82"     two numbers of 1..3 digits
//   sort     "sort 31422"  -> "12234"  3..6 digits, ascending
//   reverse  "reverse 314" -> "413"    3..6 digits, reversed
//
// The answer format is the same for every task: 1..kSyntheticMaxAnswer decimal digits, nothing else.
// A pair's `chosen` is the correct answer; its `rejected` is a plausible near miss (one digit changed, one
// adjacent swap, the input copied) or a malformed answer (a stray symbol, the answer repeated past the
// length limit, the prompt echoed before the answer).
// Everything is drawn from one seeded generator with our own integer sampling, so a seed gives the same
// files on every platform.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace stapo {

inline constexpr int kSyntheticMaxAnswer = 8;

// splitmix64: small, fast and fully specified (std:: distributions differ between standard libraries).
class SyntheticRng {
 public:
  explicit SyntheticRng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  int below(int n);  // uniform in [0, n), n > 0
 private:
  uint64_t state_;
};

struct SyntheticProblem {
  std::string prompt, answer;
};

struct SyntheticPair {
  std::string prompt, chosen, rejected;
  bool rejected_malformed = false;  // false: a well-formed wrong answer
};

SyntheticProblem synthetic_problem(SyntheticRng& rng);
// `malformed_fraction` of the rejected answers are malformed, the rest are well-formed near misses.
SyntheticPair synthetic_pair(SyntheticRng& rng, double malformed_fraction);

// The correct answer of a prompt of the task family; a stapo::Error naming the prompt otherwise.
std::string synthetic_solve(std::string_view prompt);
// Whether `answer` has the task's answer format (what a degenerate generation loses).
bool synthetic_parses(std::string_view answer);
// Whether `answer` is exactly the correct answer of `prompt`.
bool synthetic_verify(std::string_view prompt, std::string_view answer);

// A generated reply, scored: `ended` tells whether the model closed its turn itself.
struct SyntheticScore {
  bool correct;     // ended and verifies
  bool degenerate;  // never ended, or lost the answer format
};
SyntheticScore synthetic_score(std::string_view prompt, std::string_view reply, bool ended);

}  // namespace stapo
