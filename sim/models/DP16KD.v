// Behavioural model of the Lattice ECP5 DP16KD, for simulation only: the subset Lutra
// instantiates (hw/gemm/bram.py). Both ports 18 bits wide (DATA_WIDTH_A/B = 18): the word
// address is AD[13:4], AD[1:0] enable the low (bits 8:0) and high (bits 17:9) byte of a write.
// Each port is clocked by its CLK with CE; a write (port A only) stores DI when WE is set
// (WRITEMODE "NORMAL": the port's output then keeps its previous value), a read latches the
// addressed word. With REGMODE "OUTREG" the latched word passes one more register, enabled by OCE, before
// DO. Chip selects must match CSDECODE "0b000" (all low). Resets, GSR, the other widths and
// write modes, and the cascade are not modelled. Written from the ECP5 memory usage guide
// (TN1264); the vendor's own model is not redistributable.
`default_nettype none
module DP16KD(DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0, ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0, CEA, OCEA, CLKA, WEA, RSTA, CSA2, CSA1, CSA0, DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0, DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0, ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0, CEB, OCEB, CLKB, WEB, RSTB, CSB2, CSB1, CSB0, DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0);
    parameter DATA_WIDTH_A = 18;
    parameter DATA_WIDTH_B = 18;
    parameter REGMODE_A = "NOREG";
    parameter REGMODE_B = "NOREG";
    parameter RESETMODE = "SYNC";
    parameter ASYNC_RESET_RELEASE = "SYNC";
    parameter CSDECODE_A = "0b000";
    parameter CSDECODE_B = "0b000";
    parameter WRITEMODE_A = "NORMAL";
    parameter WRITEMODE_B = "NORMAL";
    parameter GSR = "ENABLED";

    input wire DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0;
    input wire ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0;
    input wire CEA, OCEA, CLKA, WEA, RSTA, CSA2, CSA1, CSA0;
    output wire DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0;
    input wire DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0;
    input wire ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0;
    input wire CEB, OCEB, CLKB, WEB, RSTB, CSB2, CSB1, CSB0;
    output wire DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0;

    initial begin
        if (DATA_WIDTH_A != 18 || DATA_WIDTH_B != 18 || CSDECODE_A != "0b000" ||
                CSDECODE_B != "0b000" || WRITEMODE_A != "NORMAL" || WRITEMODE_B != "NORMAL")
            $fatal(1, "DP16KD model: only 18-bit ports, CSDECODE 0b000 and WRITEMODE NORMAL");
    end

    reg [17:0] mem [0:1023];
    wire [17:0] di_a = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
    wire [9:0] addr_a = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4};
    wire [9:0] addr_b = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4};
    wire sel_a = {CSA2, CSA1, CSA0} == 3'b000;
    wire sel_b = {CSB2, CSB1, CSB0} == 3'b000;
    reg [17:0] latch_a, latch_b, out_a, out_b;

    always @(posedge CLKA) begin
        if (CEA && sel_a) begin
            if (WEA) begin
                if (ADA0) mem[addr_a][8:0] <= di_a[8:0];
                if (ADA1) mem[addr_a][17:9] <= di_a[17:9];
            end else
                latch_a <= mem[addr_a];
        end
        if (OCEA) out_a <= latch_a;
    end
    always @(posedge CLKB) begin
        if (CEB && sel_b) begin
            if (WEB)
                $fatal(1, "DP16KD model: port B writes are not modelled");
            latch_b <= mem[addr_b];
        end
        if (OCEB) out_b <= latch_b;
    end

    wire [17:0] do_a = REGMODE_A == "OUTREG" ? out_a : latch_a;
    wire [17:0] do_b = REGMODE_B == "OUTREG" ? out_b : latch_b;
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = do_a;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = do_b;
endmodule
`default_nettype wire
