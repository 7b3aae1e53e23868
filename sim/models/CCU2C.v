// Behavioural model of the Lattice ECP5 CCU2C (two bits of a carry chain), for simulation only.
// Each half i has a 4-input LUT of A/B/C/D (INITi) whose output is the carry propagate; when it
// is 0 the carry out is the "generate", a 2-input LUT of A and B given by INITi[3:0]; the sum is
// the propagate exclusive-or the carry in. Only INJECT1_0/1 = "NO" is modelled (what Lutra and
// Yosys' own adder mapping use). Written from the ECP5 FPGA Libraries Reference Guide's
// description of the cell; the vendor's own model is not redistributable.
`default_nettype none
module CCU2C(CIN, A0, B0, C0, D0, A1, B1, C1, D1, S0, S1, COUT);
    parameter [15:0] INIT0 = 16'h0000;
    parameter [15:0] INIT1 = 16'h0000;
    parameter INJECT1_0 = "YES";
    parameter INJECT1_1 = "YES";

    input wire CIN, A0, B0, C0, D0, A1, B1, C1, D1;
    output wire S0, S1, COUT;

    // A LUT as a tree of 2:1 multiplexers (A nearest the table), so that an unknown input the
    // table does not depend on leaves the output known, as it does in the silicon.
    function lut2(input [3:0] init, input a, input b);
        lut2 = b ? (a ? init[3] : init[2]) : (a ? init[1] : init[0]);
    endfunction
    function lut4(input [15:0] init, input a, input b, input c, input d);
        lut4 = d ? (c ? lut2(init[15:12], a, b) : lut2(init[11:8], a, b))
                 : (c ? lut2(init[7:4], a, b) : lut2(init[3:0], a, b));
    endfunction

    wire propagate0 = lut4(INIT0, A0, B0, C0, D0);
    wire carry1 = propagate0 ? CIN : lut2(INIT0[3:0], A0, B0);
    assign S0 = propagate0 ^ CIN;

    wire propagate1 = lut4(INIT1, A1, B1, C1, D1);
    assign S1 = propagate1 ^ carry1;
    assign COUT = propagate1 ? carry1 : lut2(INIT1[3:0], A1, B1);
endmodule
`default_nettype wire
