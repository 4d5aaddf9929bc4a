// The synthetic digit tasks: generation of problems and preference pairs, the solver, the format check.
#include "data/synthetic/task.h"

#include <algorithm>

#include "common/error.h"

namespace stapo {

uint64_t SyntheticRng::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

int SyntheticRng::below(int n) {
  // Rejection keeps the draw exactly uniform.
  const uint64_t range = static_cast<uint64_t>(n);
  const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  uint64_t x;
  do x = next();
  while (x >= limit);
  return static_cast<int>(x % range);
}

static bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

static std::string random_digits(SyntheticRng& rng, int length) {
  std::string s;
  for (int i = 0; i < length; ++i) s += static_cast<char>('0' + rng.below(10));
  return s;
}

// 1..3 digits without a leading zero, so the prompt has exactly one way to be written.
static std::string random_addend(SyntheticRng& rng) {
  int length = 1 + rng.below(3);
  std::string s = std::to_string(1 + rng.below(9));
  if (length == 1 && rng.below(10) == 0) return "0";
  return s + random_digits(rng, length - 1);
}

static bool canonical_number(std::string_view s, size_t max_digits) {
  return all_digits(s) && s.size() <= max_digits && (s.size() == 1 || s[0] != '0');
}

SyntheticProblem synthetic_problem(SyntheticRng& rng) {
  SyntheticProblem p;
  switch (rng.below(3)) {
    case 0: p.prompt = random_addend(rng) + "+" + random_addend(rng) + "="; break;
    case 1: p.prompt = "sort " + random_digits(rng, 3 + rng.below(4)); break;
    default: p.prompt = "reverse " + random_digits(rng, 3 + rng.below(4)); break;
  }
  p.answer = synthetic_solve(p.prompt);
  return p;
}

std::string synthetic_solve(std::string_view prompt) {
  auto digits_after = [&](std::string_view word) -> std::string {
    std::string_view d = prompt.substr(word.size());
    STAPO_CHECK(all_digits(d) && d.size() >= 3 && d.size() <= 6, "synthetic task: prompt '", prompt, "' should be '",
                word, "' followed by 3 to 6 digits");
    return std::string(d);
  };
  if (prompt.rfind("sort ", 0) == 0) {
    std::string d = digits_after("sort ");
    std::sort(d.begin(), d.end());
    return d;
  }
  if (prompt.rfind("reverse ", 0) == 0) {
    std::string d = digits_after("reverse ");
    std::reverse(d.begin(), d.end());
    return d;
  }
  size_t plus = prompt.find('+');
  STAPO_CHECK(plus != std::string_view::npos && !prompt.empty() && prompt.back() == '=',
              "synthetic task: prompt '", prompt, "' is none of 'A+B=', 'sort DIGITS', 'reverse DIGITS'");
  std::string_view a = prompt.substr(0, plus), b = prompt.substr(plus + 1, prompt.size() - plus - 2);
  STAPO_CHECK(canonical_number(a, 3) && canonical_number(b, 3), "synthetic task: prompt '", prompt,
              "' should add two numbers of 1 to 3 digits without leading zeros");
  return std::to_string(std::stoi(std::string(a)) + std::stoi(std::string(b)));
}

bool synthetic_parses(std::string_view answer) {
  return all_digits(answer) && answer.size() <= static_cast<size_t>(kSyntheticMaxAnswer);
}

bool synthetic_verify(std::string_view prompt, std::string_view answer) {
  return synthetic_parses(answer) && answer == synthetic_solve(prompt);
}

SyntheticScore synthetic_score(std::string_view prompt, std::string_view reply, bool ended) {
  return {ended && synthetic_verify(prompt, reply), !ended || !synthetic_parses(reply)};
}

// A well-formed wrong answer: one digit changed, two adjacent digits swapped, or (reverse) the input copied.
static std::string near_miss(SyntheticRng& rng, const SyntheticProblem& p) {
  for (;;) {
    std::string s = p.answer;
    int kind = rng.below(3);
    if (kind == 0) {
      size_t i = static_cast<size_t>(rng.below(static_cast<int>(s.size())));
      s[i] = static_cast<char>('0' + (s[i] - '0' + 1 + rng.below(9)) % 10);
    } else if (kind == 1 && s.size() >= 2) {
      size_t i = static_cast<size_t>(rng.below(static_cast<int>(s.size()) - 1));
      std::swap(s[i], s[i + 1]);
    } else if (p.prompt.rfind("reverse ", 0) == 0) {
      s = p.prompt.substr(8);
    }
    bool leading_zero_sum = p.prompt.back() == '=' && s.size() > 1 && s[0] == '0';
    if (s != p.answer && synthetic_parses(s) && !leading_zero_sum) return s;
  }
}

// An answer that no longer has the format: a stray symbol, the answer repeated past the length limit, or the
// prompt echoed before the answer.
static std::string malformed(SyntheticRng& rng, const SyntheticProblem& p) {
  std::string s = p.answer;
  switch (rng.below(3)) {
    case 0: {
      static const char kStray[] = "+= ";
      s.insert(static_cast<size_t>(rng.below(static_cast<int>(s.size()) + 1)), 1, kStray[rng.below(3)]);
      return s;
    }
    case 1:
      while (s.size() <= static_cast<size_t>(kSyntheticMaxAnswer)) s += p.answer;
      return s;
    default: return p.prompt + p.answer;
  }
}

SyntheticPair synthetic_pair(SyntheticRng& rng, double malformed_fraction) {
  SyntheticProblem p = synthetic_problem(rng);
  SyntheticPair pair{p.prompt, p.answer, "", false};
  pair.rejected_malformed = rng.below(1000000) < static_cast<int>(malformed_fraction * 1000000);
  pair.rejected = pair.rejected_malformed ? malformed(rng, p) : near_miss(rng, p);
  return pair;
}

}  // namespace stapo
