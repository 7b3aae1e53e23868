// Verilator harness of the encoder accelerator for `lutra run encoder` and the RTL benchmark:
// a C++ loop instead of cocotb, because a MiniLM layer takes millions of cycles and cocotb's
// per-cycle Python costs ~0.3 ms a cycle here. sim/encoder_driver.py builds and drives it.
// (Verilator spells the ports' double underscore "___05F".)
//
//   harness IMAGE.bin PORT_BYTES SEQ_LAST_BIT LATENCY MAX_CYCLES DESCRIPTORS < batches > results
//
// IMAGE.bin: the weight image (sim.encoder_image.Image.to_bytes). The external memory answers
// each read request in order, its first word LATENCY cycles after the request was taken, then
// one word per clock (sim.encoder_image.ExternalMemory with a fixed latency and no gaps).
// stdin: the number of batches, then per batch the number of sequences, their lengths, the
// number of embedding sums and the int16 sums, token-major. A read of one descriptor inside
// the program (its first DESCRIPTORS descriptors) marks the start of that pass. stdout per batch:
// one "pass INDEX CYCLE" line per descriptor fetch as it happens (flushed, so that the caller
// can show progress; cycle counted from the batch's start), then "batch CYCLES WORDS REQUESTS"
// and one "pooled v0 v1 ..." line per sequence. Every stream's sink is always ready.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

template <typename T> static void put_word(T &port, const uint32_t *w, size_t n) {
    uint64_t v = w[0];
    if (n > 1) v |= static_cast<uint64_t>(w[1]) << 32;
    port = static_cast<T>(v);
}

template <std::size_t N> static void put_word(VlWide<N> &port, const uint32_t *w, size_t n) {
    for (std::size_t i = 0; i < N; ++i) port[i] = i < n ? w[i] : 0;
}

struct Request {
    uint64_t addr, left, ready_at;
};

int main(int argc, char **argv) {
    if (argc != 7) {
        std::fprintf(stderr, "usage: %s IMAGE PORT_BYTES SEQ_LAST_BIT LATENCY MAX_CYCLES "
                     "DESCRIPTORS\n", argv[0]);
        return 2;
    }
    const size_t port_bytes = std::strtoul(argv[2], nullptr, 10);
    const int seq_last_bit = std::atoi(argv[3]);
    const uint64_t latency = std::strtoull(argv[4], nullptr, 10);
    const uint64_t max_cycles = std::strtoull(argv[5], nullptr, 10);
    const uint64_t descriptors = std::strtoull(argv[6], nullptr, 10);
    const uint64_t desc_words = (64 + port_bytes - 1) / port_bytes;
    const size_t chunks = (port_bytes + 3) / 4;
    std::vector<uint32_t> image;
    {
        FILE *f = std::fopen(argv[1], "rb");
        if (!f) { std::perror(argv[1]); return 2; }
        std::vector<uint8_t> bytes;
        uint8_t buf[65536];
        size_t got;
        while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + got);
        std::fclose(f);
        const size_t words = bytes.size() / port_bytes;
        image.assign(words * chunks, 0);
        for (size_t w = 0; w < words; ++w)
            for (size_t b = 0; b < port_bytes; ++b)
                image[w * chunks + b / 4] |= static_cast<uint32_t>(bytes[w * port_bytes + b])
                                             << (8 * (b % 4));
    }
    const uint64_t image_words = image.size() / chunks;

    VerilatedContext context;
    Vtop top{&context};
    auto tick = [&] {
        top.clk = 1;
        top.eval();
        top.clk = 0;
        top.eval();
    };
    top.clk = 0;
    top.rst = 1;
    top.eval();
    tick();
    tick();
    top.rst = 0;

    int batches = 0;
    if (std::scanf("%d", &batches) != 1) return 2;
    for (int b = 0; b < batches; ++b) {
        int nseq = 0;
        if (std::scanf("%d", &nseq) != 1) return 2;
        std::vector<int> lengths(nseq);
        for (auto &len : lengths)
            if (std::scanf("%d", &len) != 1) return 2;
        long n_x = 0;
        if (std::scanf("%ld", &n_x) != 1) return 2;
        std::vector<int> xs(n_x);
        for (auto &x : xs)
            if (std::scanf("%d", &x) != 1) return 2;
        std::deque<Request> requests;
        std::vector<std::vector<int64_t>> pooled(1);
        size_t seq_sent = 0, x_sent = 0;
        uint64_t cycle = 0, words = 0, n_requests = 0;
        top.req___05Fready = 1;
        top.o___05Fready = 1;
        while (pooled.size() < static_cast<size_t>(nseq) + 1) {
            if (cycle >= max_cycles) {
                std::fprintf(stderr, "no result after %llu cycles\n",
                             static_cast<unsigned long long>(max_cycles));
                return 1;
            }
            // Offer this cycle's beats, let the combinational logic settle, sample, clock.
            const bool seq_valid = seq_sent < lengths.size();
            top.seq___05Fvalid = seq_valid;
            if (seq_valid)
                top.seq___05Fpayload = lengths[seq_sent]
                                   | (static_cast<uint32_t>(seq_sent + 1 == lengths.size())
                                      << seq_last_bit);
            const bool x_valid = x_sent < xs.size();
            top.x___05Fvalid = x_valid;
            if (x_valid) top.x___05Fpayload = static_cast<uint16_t>(xs[x_sent]);
            const bool rdata_valid = !requests.empty() && requests.front().ready_at <= cycle;
            top.rdata___05Fvalid = rdata_valid;
            if (rdata_valid) {
                const uint64_t addr = requests.front().addr;
                put_word(top.rdata___05Fpayload, &image[addr * chunks], chunks);
            }
            top.eval();
            const bool seq_fire = seq_valid && top.seq___05Fready;
            const bool x_fire = x_valid && top.x___05Fready;
            const bool rdata_fire = rdata_valid && top.rdata___05Fready;
            const bool req_fire = top.req___05Fvalid;
            const uint64_t req = top.req___05Fpayload;
            const bool o_fire = top.o___05Fvalid;
            const uint64_t o = top.o___05Fpayload;
            tick();
            if (seq_fire) ++seq_sent;
            if (x_fire) ++x_sent;
            if (rdata_fire) {
                ++words;
                Request &r = requests.front();
                ++r.addr;
                if (--r.left == 0) requests.pop_front();
            }
            if (req_fire) {
                const uint64_t addr = req & 0xFFFFFFFFu, length = (req >> 32) & 0xFFFFFFu;
                if (length == 0 || addr + length > image_words) {
                    std::fprintf(stderr, "read of %llu words at %llu outside the image\n",
                                 static_cast<unsigned long long>(length),
                                 static_cast<unsigned long long>(addr));
                    return 1;
                }
                ++n_requests;
                if (length == desc_words && addr % desc_words == 0
                    && addr / desc_words < descriptors) {
                    std::printf("pass %llu %llu\n",
                                static_cast<unsigned long long>(addr / desc_words),
                                static_cast<unsigned long long>(cycle));
                    std::fflush(stdout);
                }
                requests.push_back({addr, length, cycle + latency});
            }
            if (o_fire) {
                const int32_t data = static_cast<int32_t>(o & 0xFFFFFFFFu);
                pooled.back().push_back(data);
                if ((o >> 32) & 1) pooled.emplace_back();
            }
            ++cycle;
        }
        std::printf("batch %llu %llu %llu\n", static_cast<unsigned long long>(cycle),
                    static_cast<unsigned long long>(words),
                    static_cast<unsigned long long>(n_requests));
        for (int s = 0; s < nseq; ++s) {
            std::printf("pooled");
            for (auto v : pooled[s]) std::printf(" %lld", static_cast<long long>(v));
            std::printf("\n");
        }
        std::fflush(stdout);
    }
    top.final();
    return 0;
}
