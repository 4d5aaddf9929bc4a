// The BPE merge loop shared by every tokenizer: symbols in a doubly linked list, candidate pairs in a
// binary heap ordered by (priority, position of the left symbol). Popping the best pair, merging it and
// pushing the two new neighbour pairs gives O(n log n) per word, and the same order as the references:
// HF tokenizers (lowest merge rank, leftmost), tiktoken (lowest rank, leftmost) and sentencepiece
// (highest score, leftmost; there priority = -score).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace stapo {

struct BpeSymbol {
  int32_t id;     // token id of the symbol (-1: not in the vocabulary yet)
  int32_t start;  // byte offset in the word
  int32_t len;    // bytes; 0 once merged into its left neighbour
  int32_t prev, next;  // neighbours in the list, -1 at the ends
};

// `lookup(left, right, &priority, &merged_id)` says whether the pair merges, how early, and into what.
template <typename Lookup>
void bpe_merge(std::vector<BpeSymbol>& symbols, Lookup&& lookup) {
  struct Candidate {
    double priority;
    int32_t left, right, len, merged_id;
  };
  // std heaps put the largest first: "larger" = later priority, then further right.
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.priority != b.priority ? a.priority > b.priority : a.left > b.left;
  };
  std::vector<Candidate> heap;
  auto push = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    double priority;
    int32_t merged_id;
    if (!lookup(symbols[left], symbols[right], &priority, &merged_id)) return;
    heap.push_back({priority, left, right, symbols[left].len + symbols[right].len, merged_id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (size_t i = 1; i < symbols.size(); ++i) push(static_cast<int32_t>(i - 1), static_cast<int32_t>(i));
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    Candidate top = heap.back();
    heap.pop_back();
    BpeSymbol& left = symbols[top.left];
    BpeSymbol& right = symbols[top.right];
    // Stale when either side changed since the pair was pushed: a symbol only grows by absorbing its
    // right neighbour, so "still adjacent and the same total length" means "the same pair".
    if (left.len == 0 || right.len == 0 || left.next != top.right || left.len + right.len != top.len) continue;
    left.id = top.merged_id;
    left.len = top.len;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.len = 0;
    push(left.prev, top.left);
    push(top.left, left.next);
  }
}

}  // namespace stapo
